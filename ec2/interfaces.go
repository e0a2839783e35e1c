package ec2

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2 refuses an instance id as the target of AssociateAddress, CreateRoute or ReplaceRoute
// when the instance has more than one network interface ("There are multiple interfaces
// attached to instance…"). A NAT instance with a separate private interface is common, so
// for such an instance the agent names interfaces itself:
//   - the Elastic IP goes on the interface in a public subnet (one whose route table sends
//     0.0.0.0/0 to an internet gateway), the lowest device index first;
//   - routes point at the interface that receives the private subnets' traffic: one in a
//     subnet that is not public, the lowest device index first; with none, the public one.
// When no subnet can be told public, both go on the primary interface (device index 0).

// attachedENI is one network interface of an instance.
type attachedENI struct {
	id, subnet string
	index      int32
	// addrs are its private IPv4 addresses, the primary first (orderAddresses).
	addrs []string
}

// targets are the interfaces a takeover by a multi-interface instance points at.
type targets struct {
	eip, route string
}

// eipTarget is what AssociateAddress names: an interface when the config targets one or the
// instance has several, the instance otherwise.
func (m me) eipTarget() (instanceID, eni string) {
	switch {
	case m.targetENI:
		return "", m.eni
	case m.multi.eip != "":
		return "", m.multi.eip
	}
	return m.instanceID, ""
}

// routeTarget is what CreateRoute and ReplaceRoute name, as eipTarget.
func (m me) routeTarget() (instanceID, eni string) {
	switch {
	case m.targetENI:
		return "", m.eni
	case m.multi.route != "":
		return "", m.multi.route
	}
	return m.instanceID, ""
}

// pickTargets chooses the interfaces of a multi-interface instance (see the top of this
// file). It reads the route tables of the interfaces' subnets and the VPC's main table.
func (c *Client) pickTargets(ctx context.Context, vpcID string, enis []attachedENI) (targets, error) {
	slices.SortFunc(enis, func(a, b attachedENI) int { return int(a.index - b.index) })
	var subnets []string
	for _, e := range enis {
		if e.subnet != "" && !slices.Contains(subnets, e.subnet) {
			subnets = append(subnets, e.subnet)
		}
	}
	public := map[string]bool{}
	if len(subnets) > 0 {
		out, err := c.api.DescribeRouteTables(ctx, &ec2sdk.DescribeRouteTablesInput{
			Filters: []types.Filter{{Name: aws.String("association.subnet-id"), Values: subnets}},
		})
		if err != nil {
			return targets{}, fmt.Errorf("read the route tables of subnets %s: %w", strings.Join(subnets, ","), err)
		}
		explicit := map[string]bool{}
		for _, t := range out.RouteTables {
			for _, a := range t.Associations {
				s := aws.ToString(a.SubnetId)
				if slices.Contains(subnets, s) {
					explicit[s] = true
					public[s] = routesToInternet(t)
				}
			}
		}
		if len(explicit) < len(subnets) {
			// The others use the VPC's main route table.
			main, err := c.api.DescribeRouteTables(ctx, &ec2sdk.DescribeRouteTablesInput{
				Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("association.main"), Values: []string{"true"}}},
			})
			if err != nil {
				return targets{}, fmt.Errorf("read the main route table of %s: %w", vpcID, err)
			}
			mainPublic := len(main.RouteTables) > 0 && routesToInternet(main.RouteTables[0])
			for _, s := range subnets {
				if !explicit[s] {
					public[s] = mainPublic
				}
			}
		}
	}
	t := targets{eip: enis[0].id, route: enis[0].id}
	for _, e := range enis {
		if public[e.subnet] {
			t.eip, t.route = e.id, e.id
			for _, p := range enis {
				if !public[p.subnet] {
					t.route = p.id
					break
				}
			}
			break
		}
	}
	return t, nil
}

// routesToInternet reports whether table t sends 0.0.0.0/0 to an internet gateway.
func routesToInternet(t types.RouteTable) bool {
	for _, r := range t.Routes {
		if aws.ToString(r.DestinationCidrBlock) == DefaultDestination && strings.HasPrefix(aws.ToString(r.GatewayId), "igw-") {
			return true
		}
	}
	return false
}
