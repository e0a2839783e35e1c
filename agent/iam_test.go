package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/ec2/ec2test"
)

// TestCluster_IAMPolicyCoversCalls records, in a proxy in front of each agent's EC2, every
// action two agents call through start-up, drift repair, a failover and a failback, and
// compares them with the policy `natganker-agent iam-policy` prints for their configuration:
// an action called but not allowed would fail on real EC2, an action allowed but never called
// is a permission too many. Both fail the test.
func TestCluster_IAMPolicyCoversCalls(t *testing.T) {
	c := newCluster(t, 200, 100)
	c.withProxies()
	ctx := context.Background()

	// Start-up: identity, source/destination check, the first reads, and nat1 claiming the
	// tagged table that has no default route yet (CreateRoute).
	c.up()
	c.waitOwner(0, 10*time.Second)

	// Drift repair: a route deleted and one pointed at the backup, by hand.
	if _, err := c.api.DeleteRoute(ctx, &awsec2.DeleteRouteInput{RouteTableId: aws.String(c.world.RouteTableIDs[0]),
		DestinationCidrBlock: aws.String("0.0.0.0/0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.ReplaceRoute(ctx, &awsec2.ReplaceRouteInput{RouteTableId: aws.String(c.world.RouteTableIDs[1]),
		DestinationCidrBlock: aws.String("0.0.0.0/0"), InstanceId: aws.String(c.world.Instances[1].ID)}); err != nil {
		t.Fatal(err)
	}
	c.waitOwner(0, 5*time.Second)

	// Failover, then failback after the delay.
	c.kill(0)
	c.waitOwner(1, 10*time.Second)
	a := c.start(0)
	c.waitMembers(a, 2)
	c.waitOwner(0, c.delay+10*time.Second)

	var called []string
	for _, p := range c.proxies {
		for action := range p.Stats() {
			// A dry run (the permission check before a takeover) needs the permission of
			// the call it tries.
			called = append(called, "ec2:"+strings.TrimPrefix(action, ec2test.DryRunPrefix))
		}
	}
	slices.Sort(called)
	called = slices.Compact(called)

	policy := ec2.IAMPolicy(ec2.PolicyScope{Region: c.world.Region, Groups: PolicyGroups(c.config(0))})
	allowed := policy.Actions()
	var missing, unused []string
	for _, a := range called {
		if !slices.Contains(allowed, a) {
			missing = append(missing, a)
		}
	}
	for _, a := range allowed {
		if !slices.Contains(called, a) {
			unused = append(unused, a)
		}
	}
	if len(missing) > 0 {
		t.Errorf("called but not allowed by the policy: %s", strings.Join(missing, ", "))
	}
	if len(unused) > 0 {
		t.Errorf("allowed by the policy but never called: %s", strings.Join(unused, ", "))
	}
	t.Logf("actions called: %s", strings.Join(called, ", "))
}
