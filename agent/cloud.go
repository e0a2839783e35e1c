package agent

import (
	"context"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/ec2"
)

// Cloud is what the agent needs from EC2. *ec2.Client implements it against the real API;
// unit tests use an in-memory fake.
type Cloud interface {
	// Observe reads who holds the group's Elastic IP and where each managed route points.
	Observe(ctx context.Context, g ec2.Group, self ec2.Self) (ec2.Observation, error)
	// Claim points the group's Elastic IP and then its routes at self, and verifies.
	Claim(ctx context.Context, g ec2.Group, self ec2.Self) (ec2.Report, error)
	// ClaimKnown is Claim for an urgent takeover: it acts on known, a recent Observe,
	// instead of reading first, and moves the Elastic IP and the routes at once.
	ClaimKnown(ctx context.Context, g ec2.Group, self ec2.Self, known ec2.Observation) (ec2.Report, error)
	// DisableSourceDestCheck lets the instance forward traffic that is not addressed to it.
	DisableSourceDestCheck(ctx context.Context, instanceID string) error
}

// HealthChecker reports whether this node's datapath can carry the group's traffic.
// *datapath.Datapath implements it.
type HealthChecker interface {
	Check(ctx context.Context) datapath.Health
}

// Repairer puts a broken datapath right. *datapath.Datapath implements it; the agent uses it
// only when the config asks it to manage the datapath.
type Repairer interface {
	Ensure(ctx context.Context) error
}

var (
	_ Cloud         = (*ec2.Client)(nil)
	_ HealthChecker = (*datapath.Datapath)(nil)
	_ Repairer      = (*datapath.Datapath)(nil)
)
