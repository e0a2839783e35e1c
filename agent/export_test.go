package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2"
)

// TestCluster lends the moto cluster of cluster_test.go to the external tests of this
// directory (package agent_test), which may import what imports agent (agent/telemetry).
type TestCluster struct{ c *cluster }

// NewTestCluster starts moto and seeds a VPC for agents of these priorities.
func NewTestCluster(t testing.TB, prios ...int) *TestCluster {
	t.Helper()
	return &TestCluster{newCluster(t, prios...)}
}

// Start starts agent i as cluster.start does, with EC2 calls reported to obs and events to
// sinks.
func (x *TestCluster) Start(i int, obs ec2.CallObserver, sinks ...EventSink) *Agent {
	c := x.c
	c.t.Helper()
	cfg := c.config(i)
	in := c.world.Instances[i]
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: logSink{c, fmt.Sprintf("nat%d", i+1)}})
	cloud, err := ec2.New(context.Background(), ec2.Options{Region: c.world.Region, Endpoint: c.endpoint(i), Logger: logger,
		MaxConcurrency: cfg.EC2.MaxConcurrency, CallTimeout: cfg.EC2.CallTimeout, Observer: obs})
	if err != nil {
		c.t.Fatal(err)
	}
	a, err := New(cfg, ec2.Identity{InstanceID: in.ID, Region: c.world.Region, LocalIPv4: c.addr(i)},
		Deps{Cloud: cloud, Version: "test", Events: sinks}, logger)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.agents[i] = a
	return a
}

// Kill stops agent i as SIGKILL would (its sinks are the caller's to close).
func (x *TestCluster) Kill(i int) { x.c.kill(i) }

// WaitOwner waits until EC2 shows the Elastic IP and every route on agent i.
func (x *TestCluster) WaitOwner(i int, within time.Duration) {
	x.c.t.Helper()
	x.c.waitOwner(i, within)
}

// WaitMembers waits until a sees n alive members, itself included.
func (x *TestCluster) WaitMembers(a *Agent, n int) { x.c.t.Helper(); x.c.waitMembers(a, n) }

// InstanceID is agent i's instance.
func (x *TestCluster) InstanceID(i int) string { return x.c.world.Instances[i].ID }
