package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestCluster_TwoGroupsKeepTheirTables (defect 8): one group per zone, each NAT primary for
// one and backup for the other, discovery on in one of them. Each owner keeps to its own
// group's table: nothing flips back and forth across reconciles, and a failover of one group
// moves that group's table alone.
func TestCluster_TwoGroupsKeepTheirTables(t *testing.T) {
	c := newCluster(t, 200, 100)
	c.asEC2 = true
	c.withProxies()
	ctx := context.Background()
	eip2, err := c.api.AllocateAddress(ctx, &awsec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	rtA, rtB := c.world.RouteTableIDs[0], c.world.RouteTableIDs[1]
	c.groups = func(i int) string {
		prioA, prioB := 200, 100
		if i == 1 {
			prioA, prioB = 100, 200
		}
		return fmt.Sprintf(`group "az-a" {
  priority = %d
  elastic_ip = %q
  route_tables = [%q]
  discover_route_tables = true
  failback_delay = "1s"
}
group "az-b" {
  priority = %d
  elastic_ip = %q
  route_tables = [%q]
  failback_delay = "1s"
}`, prioA, c.world.AllocationID, rtA, prioB, aws.ToString(eip2.AllocationId), rtB)
	}
	nat1, nat2 := c.world.Instances[0].ID, c.world.Instances[1].ID
	layout := func() (eipA, eipB, routeA, routeB string) {
		t.Helper()
		ao, err := c.api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{c.world.AllocationID, aws.ToString(eip2.AllocationId)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range ao.Addresses {
			if aws.ToString(a.AllocationId) == c.world.AllocationID {
				eipA = aws.ToString(a.InstanceId)
			} else {
				eipB = aws.ToString(a.InstanceId)
			}
		}
		rt, err := c.api.DescribeRouteTables(ctx, &awsec2.DescribeRouteTablesInput{RouteTableIds: []string{rtA, rtB}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range rt.RouteTables {
			if aws.ToString(tb.RouteTableId) == rtA {
				routeA = defaultTarget(tb)
			} else {
				routeB = defaultTarget(tb)
			}
		}
		return
	}
	waitLayout := func(wantA, wantB string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ea, eb, ra, rb := layout()
			if ea == wantA && ra == wantA && eb == wantB && rb == wantB {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("az-a: EIP %s route %s; az-b: EIP %s route %s; want az-a on %s, az-b on %s", ea, ra, eb, rb, wantA, wantB)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	c.up()
	waitLayout(nat1, nat2)
	// Several reconciles (1 s each) on both agents: nothing moves.
	deadline := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if ea, eb, ra, rb := layout(); ea != nat1 || ra != nat1 || eb != nat2 || rb != nat2 {
			t.Fatalf("a table flipped: az-a EIP %s route %s; az-b EIP %s route %s", ea, ra, eb, rb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.logged("repair: ") {
		t.Fatal("an owner repaired another group's table")
	}

	// nat2 dies: nat1 takes az-b, and az-b's table with it.
	c.kill(1)
	waitLayout(nat1, nat1)
	// nat2 returns: az-b fails back alone.
	c.start(1)
	waitLayout(nat1, nat2)
}
