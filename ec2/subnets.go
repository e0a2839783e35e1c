package ec2

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// A group whose Elastic IP sits on a secondary private address (Group.PinAddress with
// AddressIndex past 0) needs its traffic source-NATed to that address, or it leaves with the
// primary address's Elastic IP: another group's. Its traffic is what comes from the subnets
// associated with its managed route tables, so Observe lists their CIDR blocks
// (Observation.SubnetCIDRs). The subnets a VPC's main route table routes implicitly ("every
// subnet not explicitly associated") are left out: they change whenever a subnet is created
// or associated anywhere in the VPC, and include the public subnets, the NAT instances' own
// among them. A subnet's CIDR never changes, so each is described once.

// subnetCIDRs lists, sorted, the IPv4 CIDR blocks of the subnets explicitly associated with
// tables. It describes only the subnets the cache does not know yet: after the first read,
// no call.
func (c *Client) subnetCIDRs(ctx context.Context, tables []types.RouteTable) ([]string, error) {
	var ids []string
	for _, t := range tables {
		for _, a := range t.Associations {
			if !associated(a) {
				continue
			}
			if id := aws.ToString(a.SubnetId); id != "" && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	c.mu.Lock()
	var unknown []string
	for _, id := range ids {
		if _, ok := c.subnets[id]; !ok {
			unknown = append(unknown, id)
		}
	}
	c.mu.Unlock()
	if len(unknown) > 0 {
		found := map[string]string{}
		p := ec2sdk.NewDescribeSubnetsPaginator(c.api, &ec2sdk.DescribeSubnetsInput{
			Filters: []types.Filter{{Name: aws.String("subnet-id"), Values: unknown}},
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe subnets %s: %w", strings.Join(unknown, ","), err)
			}
			for _, s := range page.Subnets {
				found[aws.ToString(s.SubnetId)] = aws.ToString(s.CidrBlock)
			}
		}
		c.mu.Lock()
		if c.subnets == nil {
			c.subnets = map[string]string{}
		}
		for id, cidr := range found {
			c.subnets[id] = cidr
		}
		c.mu.Unlock()
	}
	var out []string
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		cidr := c.subnets[id]
		if p, err := netip.ParsePrefix(cidr); err == nil && p.Addr().Is4() && !slices.Contains(out, p.Masked().String()) {
			out = append(out, p.Masked().String())
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		pa, pb := netip.MustParsePrefix(a), netip.MustParsePrefix(b)
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c
		}
		return pa.Bits() - pb.Bits()
	})
	return out, nil
}

// associated reports whether a route table association is in effect (or about to be).
func associated(a types.RouteTableAssociation) bool {
	if a.AssociationState == nil {
		return true
	}
	s := a.AssociationState.State
	return s == types.RouteTableAssociationStateCodeAssociated || s == types.RouteTableAssociationStateCodeAssociating
}

// implicitMain reports whether one of tables is the VPC's main route table, which routes
// every subnet without a table of its own.
func implicitMain(tables []types.RouteTable) string {
	for _, t := range tables {
		for _, a := range t.Associations {
			if aws.ToBool(a.Main) && associated(a) {
				return aws.ToString(t.RouteTableId)
			}
		}
	}
	return ""
}

// noteSubnets sets obs.SubnetCIDRs for a group whose Elastic IP goes on a secondary private
// address, and lists in obs.Problems what keeps some of its traffic from that address.
func (c *Client) noteSubnets(ctx context.Context, g Group, tables []types.RouteTable, obs *Observation) {
	if !g.PinAddress || g.AddressIndex < 1 {
		return
	}
	cidrs, err := c.subnetCIDRs(ctx, tables)
	if err != nil {
		// The code alone: the message carries a request id, and a problem is logged once per text.
		code := errorCode(err)
		if code == "" {
			code = "no answer"
		}
		obs.Problems = append(obs.Problems, fmt.Sprintf("cannot read the subnets of the group's route tables (%s, ec2:DescribeSubnets): their traffic is masqueraded to the primary private address, and leaves with another group's Elastic IP", code))
		return
	}
	obs.SubnetCIDRs = cidrs
	if main := implicitMain(tables); main != "" {
		obs.Problems = append(obs.Problems, fmt.Sprintf("route table %s is the VPC's main route table: the subnets it routes without an explicit association are masqueraded to the primary private address, and leave with another group's Elastic IP; associate them with it explicitly", main))
	}
}
