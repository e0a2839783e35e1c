package ec2

import (
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/natganker/natganker/ec2/ec2test"
)

// TestObserve_SubnetCIDRs: against moto, a group whose Elastic IP goes on a secondary address
// learns the CIDR blocks of the subnets associated with its route tables, describing each
// subnet once; the first group, and an unpinned one, learn none and call nothing more; a
// denied DescribeSubnets and the VPC's main table are reported as problems, not errors.
func TestObserve_SubnetCIDRs(t *testing.T) {
	spec := standardSpec()
	spec.Instances[0].SecondaryIPs = []string{"10.0.0.100"}
	f := newFixture(t, spec, ec2test.ProxyOptions{}, Options{})
	ctx := ctxT(t)
	self := Self{InstanceID: f.inst(0)}
	// private-a (10.0.1.0/24), private-b (10.0.2.0/24) and private-c (no subnet).
	tables := f.world.RouteTableIDs[:3]
	second := Group{Name: "b", ElasticIP: f.world.AllocationID, RouteTableIDs: tables, PinAddress: true, AddressIndex: 1}

	obs, err := f.client.Observe(ctx, second, self)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.1.0/24", "10.0.2.0/24"}; !slices.Equal(obs.SubnetCIDRs, want) {
		t.Errorf("SubnetCIDRs = %v, want %v", obs.SubnetCIDRs, want)
	}
	if len(obs.Problems) != 0 {
		t.Errorf("problems: %v", obs.Problems)
	}
	if obs.Address.Want != "10.0.0.100" {
		t.Errorf("Address.Want = %q, want 10.0.0.100", obs.Address.Want)
	}

	t.Run("DescribedOnce", func(t *testing.T) {
		f.proxy.ResetStats()
		again, err := f.client.Observe(ctx, second, self)
		if err != nil || !slices.Equal(again.SubnetCIDRs, obs.SubnetCIDRs) {
			t.Fatalf("second read: %v, %v", again.SubnetCIDRs, err)
		}
		if n := f.proxy.Stats()["DescribeSubnets"]; n != 0 {
			t.Errorf("%d DescribeSubnets on the second read, want 0 (a subnet's CIDR never changes)", n)
		}
	})
	t.Run("FirstGroupAndUnpinned", func(t *testing.T) {
		f.proxy.ResetStats()
		for _, g := range []Group{
			{Name: "a", ElasticIP: f.world.AllocationID, RouteTableIDs: tables, PinAddress: true, AddressIndex: 0},
			{Name: "only", ElasticIP: f.world.AllocationID, RouteTableIDs: tables},
		} {
			o, err := f.client.Observe(ctx, g, self)
			if err != nil || o.SubnetCIDRs != nil {
				t.Errorf("group %s: SubnetCIDRs = %v, %v; want none", g.Name, o.SubnetCIDRs, err)
			}
		}
		if n := f.proxy.Stats()["DescribeSubnets"]; n != 0 {
			t.Errorf("%d DescribeSubnets, want 0", n)
		}
	})
	t.Run("Denied", func(t *testing.T) {
		// A subnet not described yet, so that the read needs the call.
		sub, err := f.raw.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: aws.String(f.world.VPCID), CidrBlock: aws.String("10.0.9.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.raw.AssociateRouteTable(ctx, &ec2sdk.AssociateRouteTableInput{RouteTableId: aws.String(tables[2]), SubnetId: sub.Subnet.SubnetId}); err != nil {
			t.Fatal(err)
		}
		f.proxy.Deny("DescribeSubnets")
		o, err := f.client.Observe(ctx, second, self)
		f.proxy.Deny()
		if err != nil {
			t.Fatalf("a denied DescribeSubnets failed the read: %v", err)
		}
		if o.SubnetCIDRs != nil || len(o.Problems) != 1 || !strings.Contains(o.Problems[0], "UnauthorizedOperation, ec2:DescribeSubnets") {
			t.Errorf("SubnetCIDRs %v, problems %q; want none and one naming ec2:DescribeSubnets", o.SubnetCIDRs, o.Problems)
		}
		o, err = f.client.Observe(ctx, second, self)
		if want := []string{"10.0.1.0/24", "10.0.2.0/24", "10.0.9.0/24"}; err != nil || !slices.Equal(o.SubnetCIDRs, want) {
			t.Errorf("allowed again: SubnetCIDRs = %v, %v; want %v", o.SubnetCIDRs, err, want)
		}
	})
	t.Run("MainTable", func(t *testing.T) {
		out, err := f.raw.DescribeRouteTables(ctx, &ec2sdk.DescribeRouteTablesInput{Filters: []types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{f.world.VPCID}}, {Name: aws.String("association.main"), Values: []string{"true"}}}})
		if err != nil || len(out.RouteTables) != 1 {
			t.Fatalf("main route table: %v, %v", out, err)
		}
		main := aws.ToString(out.RouteTables[0].RouteTableId)
		g := second
		g.RouteTableIDs = []string{main}
		o, err := f.client.Observe(ctx, g, self)
		if err != nil {
			t.Fatal(err)
		}
		if len(o.SubnetCIDRs) != 0 {
			t.Errorf("SubnetCIDRs = %v, want none: the main table's subnets are implicit", o.SubnetCIDRs)
		}
		if !slices.ContainsFunc(o.Problems, func(p string) bool { return strings.Contains(p, main+" is the VPC's main route table") }) {
			t.Errorf("problems %q, want one about the main route table", o.Problems)
		}
	})
}
