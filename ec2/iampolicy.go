package ec2

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The IAM actions of every EC2 call Client makes. A test reads this package's source for the
// SDK calls it makes, and another records every action the agents call through start-up,
// failover, failback and drift repair: both fail when this list and the calls part ways.
const (
	actionDescribeAddresses         = "ec2:DescribeAddresses"
	actionDescribeInstances         = "ec2:DescribeInstances"
	actionDescribeRouteTables       = "ec2:DescribeRouteTables"
	actionDescribeSubnets           = "ec2:DescribeSubnets"
	actionDescribeInstanceAttribute = "ec2:DescribeInstanceAttribute"
	actionModifyInstanceAttribute   = "ec2:ModifyInstanceAttribute"
	actionAssociateAddress          = "ec2:AssociateAddress"
	actionReplaceRoute              = "ec2:ReplaceRoute"
	actionCreateRoute               = "ec2:CreateRoute"
)

// PolicyGroup is what the IAM policy needs to know of one group.
type PolicyGroup struct {
	// Name is the group's name, used in statement ids.
	Name string
	// ElasticIP is an allocation id ("eipalloc-…") or a public IPv4 address.
	ElasticIP string
	// RouteTableIDs are the route tables the group names.
	RouteTableIDs []string
	// RouteTableTags selects, in addition, the route tables carrying all these tags.
	RouteTableTags map[string]string
	// Discover is set when the group also manages route tables found by their routes: those
	// cannot be named in advance.
	Discover bool
	// TargetENI is set when routes and the Elastic IP point at the owner's network interface
	// rather than at the instance.
	TargetENI bool
}

// PolicyScope is what the policy may be scoped to.
type PolicyScope struct {
	// Region is the region of the ARNs; "" allows any.
	Region string
	// InstanceProfile is the ARN of the NAT instances' instance profile. When set, the
	// actions on instances are allowed only on instances with that profile (the condition
	// key ec2:InstanceProfile), that is on the NAT instances themselves.
	InstanceProfile string
	// Groups are the configured groups. None gives a policy fit for any configuration.
	Groups []PolicyGroup
}

// Policy is an IAM policy document.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one statement of a Policy. Condition maps an operator (StringEquals) to
// condition keys and their allowed values.
type Statement struct {
	Sid       string                         `json:"Sid"`
	Effect    string                         `json:"Effect"`
	Action    []string                       `json:"Action"`
	Resource  []string                       `json:"Resource"`
	Condition map[string]map[string][]string `json:"Condition,omitempty"`
}

// Actions returns every action the policy allows, sorted, each once.
func (p Policy) Actions() []string {
	var out []string
	for _, s := range p.Statement {
		out = append(out, s.Action...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// partition returns the ARN partition of region.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// IAMPolicy returns the least-privilege policy for an agent managing s.Groups: exactly the
// actions Client calls, on the resources the groups name where EC2 supports resource-level
// permissions for the action (see "Actions, resources, and condition keys for Amazon EC2" in
// AWS's Service Authorization Reference):
//
//   - DescribeAddresses, DescribeInstances, DescribeRouteTables and DescribeSubnets support
//     none: "*".
//   - DescribeInstanceAttribute and ModifyInstanceAttribute (the source/destination check of
//     the agent's own instance) and AssociateAddress (onto the agent's own instance) take
//     instance ARNs; with s.InstanceProfile only instances with that profile.
//   - AssociateAddress also takes the Elastic IP: its allocation id's ARN, or for a public IP
//     any elastic-ip with the condition ec2:PublicIpAddress; and network-interface ARNs, for
//     groups whose target is "eni" and for instances with several network interfaces, whose
//     Elastic IP EC2 wants associated with an interface.
//   - ReplaceRoute and CreateRoute take route-table ARNs: the named tables, tables carrying
//     the group's tags (ec2:ResourceTag/KEY), and any table when a group discovers its
//     tables.
//
// Account ids are "*": the configuration does not know the account.
func IAMPolicy(s PolicyScope) Policy {
	region := s.Region
	if region == "" {
		region = "*"
	}
	arn := func(resource string) string {
		return fmt.Sprintf("arn:%s:ec2:%s:*:%s", partition(s.Region), region, resource)
	}
	generic := len(s.Groups) == 0
	p := Policy{Version: "2012-10-17"}
	add := func(st Statement) {
		st.Effect = "Allow"
		p.Statement = append(p.Statement, st)
	}

	read := []string{actionDescribeAddresses, actionDescribeInstances, actionDescribeRouteTables}
	if generic || len(s.Groups) > 1 {
		// The subnets of the groups whose Elastic IP goes on a secondary address (subnets.go).
		read = append(read, actionDescribeSubnets)
	}
	add(Statement{
		Sid:      "ReadAddressesInstancesRouteTables",
		Action:   read,
		Resource: []string{"*"},
	})

	onInstances := Statement{
		Sid:      "SourceDestCheckAndElasticIPOnNATInstances",
		Action:   []string{actionDescribeInstanceAttribute, actionModifyInstanceAttribute},
		Resource: []string{arn("instance/*")},
	}
	if generic || slices.ContainsFunc(s.Groups, func(g PolicyGroup) bool { return !g.TargetENI }) {
		onInstances.Action = append(onInstances.Action, actionAssociateAddress)
	}
	if s.InstanceProfile != "" {
		onInstances.Condition = map[string]map[string][]string{"ArnEquals": {"ec2:InstanceProfile": {s.InstanceProfile}}}
	}
	slices.Sort(onInstances.Action)
	add(onInstances)
	// Also for groups whose target is "instance": on an instance with several network
	// interfaces EC2 wants the interface named, and the agent names it.
	add(Statement{
		Sid:      "ElasticIPOntoNetworkInterfaces",
		Action:   []string{actionAssociateAddress},
		Resource: []string{arn("network-interface/*")},
	})

	var allocs, publicIPs []string
	for _, g := range s.Groups {
		if strings.HasPrefix(g.ElasticIP, "eipalloc-") {
			allocs = append(allocs, arn("elastic-ip/"+g.ElasticIP))
		} else if g.ElasticIP != "" {
			publicIPs = append(publicIPs, g.ElasticIP)
		}
	}
	if generic {
		allocs = []string{arn("elastic-ip/*")}
	}
	if len(allocs) > 0 {
		add(Statement{Sid: "MoveElasticIPs", Action: []string{actionAssociateAddress}, Resource: unique(allocs)})
	}
	if len(publicIPs) > 0 {
		add(Statement{
			Sid:       "MoveElasticIPsByAddress",
			Action:    []string{actionAssociateAddress},
			Resource:  []string{arn("elastic-ip/*")},
			Condition: map[string]map[string][]string{"StringEquals": {"ec2:PublicIpAddress": unique(publicIPs)}},
		})
	}

	routeActions := []string{actionCreateRoute, actionReplaceRoute}
	if generic || slices.ContainsFunc(s.Groups, func(g PolicyGroup) bool { return g.Discover }) {
		// A discovered table is known only by the route it holds: no ARN or tag narrows it.
		add(Statement{Sid: "PointRoutesInAnyRouteTable", Action: routeActions, Resource: []string{arn("route-table/*")}})
		return p
	}
	var tables []string
	for _, g := range s.Groups {
		for _, id := range g.RouteTableIDs {
			tables = append(tables, arn("route-table/"+id))
		}
	}
	if len(tables) > 0 {
		add(Statement{Sid: "PointRoutesInNamedRouteTables", Action: routeActions, Resource: unique(tables)})
	}
	sids := map[string]bool{}
	for i, g := range s.Groups {
		if len(g.RouteTableTags) == 0 {
			continue
		}
		sid := "PointRoutesInTaggedRouteTables" + sidPart(g.Name)
		if sids[sid] {
			sid += fmt.Sprint(i + 1) // names that differ only in punctuation
		}
		sids[sid] = true
		cond := map[string][]string{}
		for _, k := range slices.Sorted(maps.Keys(g.RouteTableTags)) {
			cond["ec2:ResourceTag/"+k] = []string{g.RouteTableTags[k]}
		}
		add(Statement{
			Sid:       sid,
			Action:    routeActions,
			Resource:  []string{arn("route-table/*")},
			Condition: map[string]map[string][]string{"StringEquals": cond},
		})
	}
	return p
}

// unique sorts ss and drops repeats.
func unique(ss []string) []string {
	ss = slices.Clone(ss)
	slices.Sort(ss)
	return slices.Compact(ss)
}

// sidPart turns a group name into letters and digits, as statement ids allow: "az-a" → "AzA".
func sidPart(name string) string {
	var b strings.Builder
	upper := true
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z':
			if upper {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			upper = false
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
			upper = false
		default:
			upper = true
		}
	}
	return b.String()
}
