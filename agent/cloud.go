package agent

import (
	"context"
	"time"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

// Cloud is what the agent needs from EC2. *ec2.Client implements it against the real API;
// loop tests use an in-memory fake.
type Cloud interface {
	// Observe reads who holds the group's Elastic IP and where each managed route points.
	Observe(ctx context.Context, g ec2.Group, self ec2.Self) (ec2.Observation, error)
	// Claim points the group's Elastic IP and routes at self and verifies, fixing at once
	// what the read-back shows still wrong. With known (a recent Observe) it acts without
	// reading first and moves everything known; without, it reads first and touches only
	// what does not point at self.
	Claim(ctx context.Context, g ec2.Group, self ec2.Self, known *ec2.Observation) (ec2.Report, error)
	// DisableSourceDestCheck lets the instance forward traffic that is not addressed to it.
	DisableSourceDestCheck(ctx context.Context, instanceID string) error
}

// Membership is what the agent needs from gossip. *gossip.Gossip implements it over
// memberlist; loop tests use an in-memory fake.
type Membership interface {
	// Start joins the cluster and starts delivering Events.
	Start(ctx context.Context) error
	// Events wakes the agent up on each membership change.
	Events() <-chan gossip.Event
	// Members is a copy of the member table, this node included.
	Members() []gossip.Member
	// LastContact is when a member last showed it was alive.
	LastContact(name string) time.Time
	// SetMeta publishes this node's metadata without waiting.
	SetMeta(m gossip.Meta) error
	// PublishMeta publishes this node's metadata and waits until it was broadcast.
	PublishMeta(m gossip.Meta, timeout time.Duration) error
	// Confirm probes a peer directly.
	Confirm(ctx context.Context, name, addr string) (gossip.Probe, error)
	// Heartbeat pings a peer once; an answer counts as contact.
	Heartbeat(name, addr string) error
	// Unreadable lists addresses whose gossip this node cannot decrypt.
	Unreadable() []gossip.Unreadable
	// PathProblems lists peers whose gossip port lets only one protocol through.
	PathProblems() []gossip.PathProblem
	// LocalAddr is the address peers reach this node at.
	LocalAddr() string
	// Leave tells the peers this node is going away.
	Leave(timeout time.Duration) error
	// Close stops gossip without leaving.
	Close() error
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
	_ Membership    = (*gossip.Gossip)(nil)
	_ HealthChecker = (*datapath.Datapath)(nil)
	_ Repairer      = (*datapath.Datapath)(nil)
)
