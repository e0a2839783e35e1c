package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/natganker/natganker/ec2/ec2test"
)

// The fault scenarios run real agents against moto, each agent behind its own proxy that
// injects the fault, and check the end state in moto: nothing is left pointing at a dead
// instance for longer than the fault lasts plus one takeover.

// takeoverBound is how long one takeover may take once nothing stands in its way: detection
// (about a second), confirmation, EC2 calls and a read-back, with room for a busy machine.
const takeoverBound = 15 * time.Second

// TestFaults_EC2UnreachableWhileOwnerDies: EC2 accepts no answerable call for 30 s, and the
// owner dies during it. Nothing can move meanwhile; once EC2 answers, the backup takes over
// within one takeover.
func TestFaults_EC2UnreachableWhileOwnerDies(t *testing.T) {
	c := newCluster(t, 200, 100)
	c.withProxies()
	c.up()
	c.waitOwner(0, 10*time.Second)
	for _, p := range c.proxies {
		p.Hang()
	}
	outage := time.Now()
	c.kill(0)
	deadline := outage.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if eip, _ := c.owners(); eip != c.world.Instances[0].ID {
			t.Fatalf("the EIP moved to %q while EC2 was unreachable", eip)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !c.logged("ec2 call attempt failed; retrying") {
		t.Error("30 s of unreachable EC2 and no warning in the log")
	}
	c.proxies[1].Unhang()
	took := c.waitOwner(1, takeoverBound)
	t.Logf("EC2 back → EIP and routes on nat2 after %v", took.Round(time.Millisecond))
}

// TestFaults_BothRestartAtOnce: both agents stop and start again together, and with one
// starting a little after the other: at most one ownership change, and the higher priority
// ends up owning.
func TestFaults_BothRestartAtOnce(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first int
		gap   time.Duration
	}{
		{"Together", 0, 0},
		{"BackupFirst", 1, 700 * time.Millisecond},
		{"OwnerFirst", 0, 700 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 200, 100)
			a := c.start(0)
			c.start(1)
			c.waitMembers(a, 2)
			c.waitOwner(0, 10*time.Second)
			c.kill(0)
			c.kill(1)
			changes := c.watchOwner(t)
			c.start(tt.first)
			if tt.gap > 0 {
				// The second agent starts within a second of the first, as a fleet restart
				// would have it; the gap is the scenario, not a synchronization.
				time.Sleep(tt.gap)
			}
			c.start(1 - tt.first)
			c.waitMembers(c.agents[0], 2)
			c.waitMembers(c.agents[1], 2)
			c.waitOwner(0, 10*time.Second)
			// Long enough for each agent's startup grace and several reconciles.
			c.stays(0, 4*time.Second)
			if n := changes(); n > 1 {
				t.Fatalf("%d ownership changes across a restart of both agents, want at most 1", n)
			}
		})
	}
}

// watchOwner samples who holds the EIP every 50 ms until the test ends and returns a func
// counting the changes seen so far.
func (c *cluster) watchOwner(t *testing.T) func() int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	counts := make(chan int)
	ask := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		last, n := "", 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ask:
				counts <- n
			case <-tick.C:
				ao, err := c.api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{c.world.AllocationID}})
				if err != nil || len(ao.Addresses) == 0 {
					continue
				}
				if o := aws.ToString(ao.Addresses[0].InstanceId); o != last {
					if last != "" {
						n++
					}
					last = o
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() int { ask <- struct{}{}; return <-counts }
}

// TestFaults_ByHand: what an operator (or another tool) may do to EC2 behind the agents'
// backs.
func TestFaults_ByHand(t *testing.T) {
	c := newCluster(t, 200, 100)
	c.up()
	c.waitOwner(0, 10*time.Second)
	ctx := context.Background()

	t.Run("EIPDisassociated", func(t *testing.T) {
		ao, err := c.api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{c.world.AllocationID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.api.DisassociateAddress(ctx, &awsec2.DisassociateAddressInput{AssociationId: ao.Addresses[0].AssociationId}); err != nil {
			t.Fatal(err)
		}
		// The next read (reconcile is 1 s here) finds it unassociated; the owner by
		// priority takes it back.
		c.waitOwner(0, takeoverBound)
	})

	t.Run("OwnerStoppedInEC2", func(t *testing.T) {
		nat1 := c.world.Instances[0].ID
		if _, err := c.api.StopInstances(ctx, &awsec2.StopInstancesInput{InstanceIds: []string{nat1}}); err != nil {
			t.Fatal(err)
		}
		// Its agent still gossips, but EC2 says it forwards nothing: nat2 takes over.
		c.waitOwner(1, takeoverBound)
		if !c.logged("EC2 reports this instance stopped") && !c.logged("EC2 reports it stopped") {
			t.Error("no log line naming the stopped instance")
		}
		if _, err := c.api.StartInstances(ctx, &awsec2.StartInstancesInput{InstanceIds: []string{nat1}}); err != nil {
			t.Fatal(err)
		}
		// Running again: failback after the delay.
		c.waitOwner(0, c.delay+takeoverBound)
	})

	t.Run("RouteTableDeleted", func(t *testing.T) {
		gone := c.world.RouteTableIDs[1]
		if _, err := c.api.DeleteRouteTable(ctx, &awsec2.DeleteRouteTableInput{RouteTableId: aws.String(gone)}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(takeoverBound)
		for !c.logged("route table " + gone + " not found") {
			if time.Now().After(deadline) {
				t.Fatal("the deleted route table was never reported")
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The other tables stay with the owner, and a failover still moves them.
		c.kill(0)
		deadline = time.Now().Add(takeoverBound)
		for {
			eip, routes := c.ownersExcept(gone)
			if eip == c.world.Instances[1].ID && len(routes) == 2 && routes[0] == eip && routes[1] == eip {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the owner died: EIP %s, routes %v", eip, routes)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// ownersExcept is owners() for the managed tables other than skip.
func (c *cluster) ownersExcept(skip string) (string, []string) {
	c.t.Helper()
	ctx := context.Background()
	ao, err := c.api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{c.world.AllocationID}})
	if err != nil {
		c.t.Fatal(err)
	}
	var ids []string
	for _, id := range c.world.RouteTableIDs {
		if id != skip {
			ids = append(ids, id)
		}
	}
	rt, err := c.api.DescribeRouteTables(ctx, &awsec2.DescribeRouteTablesInput{RouteTableIds: ids})
	if err != nil {
		c.t.Fatal(err)
	}
	var routes []string
	for _, t := range rt.RouteTables {
		routes = append(routes, defaultTarget(t))
	}
	return aws.ToString(ao.Addresses[0].InstanceId), routes
}

// TestFaults_NewOwnerDiesMidClaim: the owner dies, the next by priority starts its takeover
// and dies as soon as its first ReplaceRoute has passed (its EC2 calls from then on fail, as
// from a dead instance), leaving the Elastic IP and one of three routes moved. The third
// member finishes the job.
func TestFaults_NewOwnerDiesMidClaim(t *testing.T) {
	c := newCluster(t, 300, 200, 100)
	// One route call at a time, so that "the first ReplaceRoute passed" leaves the others
	// undone.
	c.ec2Extra = "max_concurrency = 1"
	c.withProxies()
	c.up()
	c.waitOwner(0, 10*time.Second)
	died := make(chan struct{}, 1)
	p := c.proxies[1]
	p.OnCall("ReplaceRoute", func(n int) {
		if n == 1 {
			p.StartOutage()
			died <- struct{}{}
		}
	})
	c.kill(0)
	select {
	case <-died:
	case <-time.After(takeoverBound):
		t.Fatal("nat2 never started its takeover")
	}
	c.kill(1)
	eip, routes := c.owners()
	t.Logf("nat2 died mid-claim: EIP on %s, routes %v; nat2's calls %v, faults %v", eip, routes, p.Stats(), p.Faults())
	moved := 0
	for _, r := range routes {
		if r == c.world.Instances[1].ID {
			moved++
		}
	}
	if moved != 1 {
		t.Fatalf("nat2 moved %d of %d routes before dying, want 1: the scenario did not happen", moved, len(routes))
	}
	took := c.waitOwner(2, 2*takeoverBound)
	t.Logf("nat3 finished the job %v after nat2 died", took.Round(time.Millisecond))
}

// TestFaults_RoutesThrottledAfterEIP: the takeover's AssociateAddress goes through but every
// route call is throttled for 20 s. The Elastic IP moves at once; the routes follow when EC2
// lets them, and none is left on the dead owner longer than that plus one takeover.
func TestFaults_RoutesThrottledAfterEIP(t *testing.T) {
	c := newCluster(t, 200, 100)
	c.withProxies()
	c.up()
	c.waitOwner(0, 10*time.Second)
	const throttled = 20 * time.Second
	for _, action := range []string{"ReplaceRoute", "CreateRoute"} {
		c.proxies[1].FailFor(action, throttled, "RequestLimitExceeded")
	}
	start := time.Now()
	c.kill(0)
	nat2 := c.world.Instances[1].ID
	for deadline := time.Now().Add(takeoverBound); ; time.Sleep(50 * time.Millisecond) {
		if eip, _ := c.owners(); eip == nat2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Elastic IP did not move while only route calls were throttled")
		}
	}
	if _, routes := c.owners(); routes[0] == nat2 && time.Since(start) < throttled {
		t.Fatalf("a route moved while route calls were throttled: %v", routes)
	}
	took := c.waitOwner(1, throttled+takeoverBound)
	t.Logf("routes on nat2 %v after the kill (throttled for %v)", took.Round(time.Millisecond), throttled)
}

// TestFaults_EventualConsistency: EC2's Describe calls keep showing the state from before a
// change for 2 s after it. The takeover still completes in one claim, later reads that lag
// behind are read again rather than acted on (no repeat calls), and nothing is logged as an
// error.
func TestFaults_EventualConsistency(t *testing.T) {
	c := newCluster(t, 200, 100)
	c.withProxies()
	c.up()
	c.waitOwner(0, 10*time.Second)
	p := c.proxies[1]
	p.StaleReads(2 * time.Second)
	c.kill(0)
	c.waitOwner(1, takeoverBound)
	st, err := c.agents[1].Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(takeoverBound); st.Groups[0].LastTakeover == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no takeover report")
		}
		if st, err = c.agents[1].Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	after := ec2test.Mutations(p.Stats())
	// Several reconciles (1 s) through the stale window and past it.
	c.stays(1, 4*time.Second)
	if n := ec2test.Mutations(p.Stats()); n != after {
		t.Errorf("%d more mutating calls after the takeover: stale reads were acted on", n-after)
	}
	if lt := st.Groups[0].LastTakeover; lt.Error != "" {
		t.Errorf("takeover reported an error: %s", lt.Error)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.logs {
		if strings.HasPrefix(l, "nat2 ") && strings.Contains(l, "[ERROR]") {
			t.Errorf("nat2 logged an error: %s", l)
		}
	}
}
