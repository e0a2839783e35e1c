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

// TestCluster_ThreeNATsTwoZones is the deployment the README describes: one group per zone,
// each zone's NAT primary for its own group, a third NAT the standby of both. Killing a zone's
// NAT moves that zone's group alone, to the standby; the other zone's group never moves; and
// when the NAT comes back its group fails back to it.
func TestCluster_ThreeNATsTwoZones(t *testing.T) {
	c := newCluster(t, 0, 0, 0)
	c.asEC2 = true
	c.withProxies()
	ctx := context.Background()
	eipB, err := c.api.AllocateAddress(ctx, &awsec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	rtA, rtB := c.world.RouteTableIDs[0], c.world.RouteTableIDs[1]
	// Priorities (az-a, az-b): nat1 (300, 100), nat2 (100, 300), nat3 (200, 200).
	prios := [][2]int{{300, 100}, {100, 300}, {200, 200}}
	c.groups = func(i int) string {
		return zoneGroups(prios[i][0], c.world.AllocationID, rtA, prios[i][1], aws.ToString(eipB.AllocationId), rtB)
	}
	nat := func(i int) string { return c.world.Instances[i].ID }
	read := func() (a, b string, err error) {
		ao, err := c.api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{c.world.AllocationID, aws.ToString(eipB.AllocationId)}})
		if err != nil {
			return "", "", err
		}
		eip := map[string]string{}
		for _, ad := range ao.Addresses {
			eip[aws.ToString(ad.AllocationId)] = aws.ToString(ad.InstanceId)
		}
		rt, err := c.api.DescribeRouteTables(ctx, &awsec2.DescribeRouteTablesInput{RouteTableIds: []string{rtA, rtB}})
		if err != nil {
			return "", "", err
		}
		route := map[string]string{}
		for _, tb := range rt.RouteTables {
			route[aws.ToString(tb.RouteTableId)] = defaultTarget(tb)
		}
		// A group is on an instance when its Elastic IP and its route both are.
		on := func(alloc, table string) string {
			if eip[alloc] != route[table] {
				return "split(" + eip[alloc] + "," + route[table] + ")"
			}
			return eip[alloc]
		}
		return on(c.world.AllocationID, rtA), on(aws.ToString(eipB.AllocationId), rtB), nil
	}
	layout := func() (a, b string) {
		t.Helper()
		a, b, err := read()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	waitLayout := func(what, wantA, wantB string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			a, b := layout()
			if a == wantA && b == wantB {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: az-a on %s, az-b on %s; want az-a on %s, az-b on %s", what, a, b, wantA, wantB)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// azBStays fails the test if az-b leaves nat2 while f runs.
	azBStays := func(f func()) {
		t.Helper()
		done := make(chan struct{})
		moved := make(chan string, 1)
		go func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, b, err := read(); err == nil && b != nat(1) {
					moved <- b
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		f()
		close(done)
		select {
		case b := <-moved:
			t.Fatalf("az-b left nat2 for %s", b)
		default:
		}
	}

	c.up()
	waitLayout("start", nat(0), nat(1))
	azBStays(func() {
		c.kill(0)
		waitLayout("nat1 killed", nat(2), nat(1))
		c.start(0)
		waitLayout("nat1 back", nat(0), nat(1))
	})
}

// zoneGroups is the configuration of the two zones' groups, az-a and az-b, each with its
// priority, Elastic IP and one route table, no discovery and a failback delay of 1 s.
func zoneGroups(prioA int, eipA, tableA string, prioB int, eipB, tableB string) string {
	return fmt.Sprintf(`group "az-a" {
  priority = %d
  elastic_ip = %q
  route_tables = [%q]
  discover_route_tables = false
  failback_delay = "1s"
}
group "az-b" {
  priority = %d
  elastic_ip = %q
  route_tables = [%q]
  discover_route_tables = false
  failback_delay = "1s"
}`, prioA, eipA, tableA, prioB, eipB, tableB)
}
