package ec2

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DefaultDestination is the route a group manages when it names none.
const DefaultDestination = "0.0.0.0/0"

// Route states reported in Route.State.
const (
	RouteActive    = "active"
	RouteBlackhole = "blackhole"
	RouteMissing   = "missing"
)

// InstanceStateUnknown is Instance.State for an instance EC2 does not know (or did not answer for).
const InstanceStateUnknown = "unknown"

// Group is the set of resources that move together to whichever instance owns the group.
type Group struct {
	Name string
	// ElasticIP is an allocation id ("eipalloc-…") or a public IPv4 address; "" manages none.
	ElasticIP string
	// RouteTableIDs are managed route tables named explicitly.
	RouteTableIDs []string
	// RouteTableTags selects, in addition, every route table in the VPC carrying all these tags.
	RouteTableTags map[string]string
	// DiscoverTargets are the instance ids of the cluster members: every route table in the VPC
	// whose route for one of Destinations points at one of them (or at one of their network
	// interfaces) is managed as well, unless one of OtherGroups names or tags it.
	DiscoverTargets []string
	// VPCID is the VPC searched for tagged and discovered route tables; "" is the VPC of
	// Self.InstanceID.
	VPCID string
	// Destinations are the CIDR blocks routed through the owner; default ["0.0.0.0/0"].
	Destinations []string
	// OtherGroups are the route-table selections of the agent's other groups. A table one of
	// them names or tags belongs to that group alone: discovery never selects it for this group.
	// A table this group names or tags itself stays managed by this group, and is reported in
	// Observation.Problems when another group selects it too.
	OtherGroups []TableSelection
	// PinAddress puts the Elastic IP on one private address of the interface it goes on, the
	// one at AddressIndex (0: the primary address), and counts it as on Self only there (see
	// addresses.go). An agent that may hold several groups at once sets it, since EC2 lets
	// only one Elastic IP be associated with a private address.
	PinAddress   bool
	AddressIndex int
}

// TableSelection is how one group selects its route tables, by id and by tags.
type TableSelection struct {
	Group         string
	RouteTableIDs []string
	// RouteTableTags selects every table carrying all these tags; empty selects none.
	RouteTableTags map[string]string
	// Destinations are the routes that group manages in its tables; default ["0.0.0.0/0"].
	Destinations []string
}

// selects reports whether s names or tags route table t.
func (s TableSelection) selects(t types.RouteTable) bool {
	return slices.Contains(s.RouteTableIDs, aws.ToString(t.RouteTableId)) ||
		(len(s.RouteTableTags) > 0 && hasTags(t.Tags, s.RouteTableTags))
}

// selectedByOthers returns the other groups that name or tag t for one of g's destinations:
// two groups may share a table when they route different destinations through it.
func (g Group) selectedByOthers(t types.RouteTable) []string {
	var out []string
	for _, o := range g.OtherGroups {
		theirs := Group{Destinations: o.Destinations}.destinations()
		shared := slices.ContainsFunc(g.destinations(), func(d string) bool { return slices.Contains(theirs, d) })
		if shared && o.selects(t) && !slices.Contains(out, o.Group) {
			out = append(out, o.Group)
		}
	}
	return out
}

func (g Group) destinations() []string {
	if len(g.Destinations) == 0 {
		return []string{DefaultDestination}
	}
	return g.Destinations
}

// Self is the instance that claims groups.
type Self struct {
	InstanceID string
	// ENIID is the network interface routes and the Elastic IP point at when TargetENI is set;
	// "" is the instance's primary interface.
	ENIID string
	// TargetENI makes routes and the Elastic IP point at the network interface instead of the
	// instance.
	TargetENI bool
}

// Observation is what EC2 reports for a group.
type Observation struct {
	EIP EIP
	// Routes has one entry per managed route table and destination, sorted by table then
	// destination.
	Routes []Route
	// Instances holds every instance referenced by the Elastic IP or a route, and Self.
	Instances map[string]Instance
	ReadAt    time.Time
	// Problems are non-fatal findings, e.g. `route table rtb-123 not found`.
	Problems []string
	// Address is where the Elastic IP belongs on Self when Group.PinAddress is set; zero
	// otherwise.
	Address Address
	// Misplaced, when set, says that the Elastic IP is on Self but on another private
	// address than Address.Want: drift to repair.
	Misplaced string
	// SubnetCIDRs are, for a group whose Elastic IP goes on a secondary private address
	// (Group.PinAddress, AddressIndex past 0), the IPv4 CIDR blocks of the subnets explicitly
	// associated with its managed route tables, sorted: the traffic to source-NAT to
	// Address.Want (subnets.go). Nil for other groups.
	SubnetCIDRs []string
}

// EIP is an Elastic IP and its association; the association fields are "" when unassociated.
type EIP struct {
	AllocationID, PublicIP, AssociationID, InstanceID, ENIID, PrivateIP string
}

// Route is one destination of one route table.
type Route struct {
	RouteTableID, Destination string
	// InstanceID and ENIID are the target; both "" when the route is missing or points at
	// something else.
	InstanceID, ENIID string
	// OtherTarget names a target that is not an instance or network interface (igw-…, nat-…).
	OtherTarget string
	// State is "active", "blackhole" or "missing".
	State string
	// Associated is set when the table carries traffic: subnets are associated with it, or
	// it is the VPC's main table (which routes every subnet without a table of its own).
	// A takeover moves these routes first.
	Associated bool
}

// Instance is an EC2 instance as far as ownership decisions go.
type Instance struct {
	ID string
	// State is pending, running, stopping, stopped, shutting-down, terminated or "unknown".
	State     string
	PrivateIP string
	ENIID     string // primary network interface
	VPCID     string
}

// me is the resolved claimant.
type me struct {
	instanceID, eni, vpcID string
	primaryENI             string
	enis                   []string
	targetENI              bool
	// multi names the interfaces to target, for an instance with several (interfaces.go).
	multi targets
	// pin is Group.PinAddress, and addr where the Elastic IP goes then (addresses.go).
	pin  bool
	addr Address
}

// owns reports whether a target (instance id and/or interface id) is this instance in the
// configured targeting mode.
func (m me) owns(instanceID, eni string) bool {
	if m.targetENI {
		return eni != "" && eni == m.eni
	}
	return instanceID != "" && instanceID == m.instanceID
}

// eipRead is the Elastic IP as read, with whether it exists.
type eipRead struct {
	eip   EIP
	found bool
	err   error
}

func (c *Client) readEIP(ctx context.Context, ref string) eipRead {
	filter := "public-ip"
	if strings.HasPrefix(ref, "eipalloc-") {
		filter = "allocation-id"
	}
	r := eipRead{eip: EIP{}}
	if filter == "public-ip" {
		r.eip.PublicIP = ref
	} else {
		r.eip.AllocationID = ref
	}
	out, err := c.api.DescribeAddresses(ctx, &ec2sdk.DescribeAddressesInput{
		Filters: []types.Filter{{Name: aws.String(filter), Values: []string{ref}}},
	})
	if err != nil {
		r.err = fmt.Errorf("describe elastic ip %s: %w", ref, err)
		return r
	}
	if len(out.Addresses) == 0 {
		return r
	}
	a := out.Addresses[0]
	r.found = true
	r.eip = EIP{
		AllocationID:  aws.ToString(a.AllocationId),
		PublicIP:      aws.ToString(a.PublicIp),
		AssociationID: aws.ToString(a.AssociationId),
		InstanceID:    aws.ToString(a.InstanceId),
		ENIID:         aws.ToString(a.NetworkInterfaceId),
		PrivateIP:     aws.ToString(a.PrivateIpAddress),
	}
	if r.eip.InstanceID == "" && r.eip.ENIID != "" {
		// Associated with an interface (a multi-interface instance's, say): an answer may
		// name only the interface.
		c.mu.Lock()
		r.eip.InstanceID = c.eniOwner[r.eip.ENIID]
		c.mu.Unlock()
	}
	return r
}

// tablesRead is the managed route tables as read.
type tablesRead struct {
	tables   []types.RouteTable          // managed, sorted by id
	all      map[string]types.RouteTable // every table read, by id
	missing  []string                    // configured ids EC2 does not know
	problems []string
	err      error
}

// describeRouteTables returns every table matching filters.
func (c *Client) describeRouteTables(ctx context.Context, filters []types.Filter) ([]types.RouteTable, error) {
	p := ec2sdk.NewDescribeRouteTablesPaginator(c.api, &ec2sdk.DescribeRouteTablesInput{Filters: filters})
	var all []types.RouteTable
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		all = append(all, page.RouteTables...)
	}
	return all, nil
}

// readTables reads every route table of the VPC in one call and selects the managed ones:
// configured ids, tag matches and tables routing a destination via a cluster member, except
// tables another group names or tags.
func (c *Client) readTables(ctx context.Context, g Group, m me) tablesRead {
	var r tablesRead
	all, err := c.describeRouteTables(ctx, []types.Filter{{Name: aws.String("vpc-id"), Values: []string{m.vpcID}}})
	if err != nil {
		r.err = fmt.Errorf("describe route tables in %s: %w", m.vpcID, err)
		return r
	}
	selected := map[string]types.RouteTable{}
	byID := map[string]types.RouteTable{}
	for _, t := range all {
		byID[aws.ToString(t.RouteTableId)] = t
	}
	r.all = byID

	var elsewhere []string
	for _, id := range g.RouteTableIDs {
		if t, ok := byID[id]; ok {
			selected[id] = t
		} else if !slices.Contains(elsewhere, id) {
			elsewhere = append(elsewhere, id)
		}
	}

	if len(g.RouteTableTags) > 0 {
		n := 0
		for id, t := range byID {
			if hasTags(t.Tags, g.RouteTableTags) {
				selected[id] = t
				n++
			}
		}
		if n == 0 {
			r.problems = append(r.problems, fmt.Sprintf("tag filter %s matched no route table in %s", formatTags(g.RouteTableTags), m.vpcID))
		}
	}

	if len(g.DiscoverTargets) > 0 {
		instances, enis := c.memberTargets(g, m)
		dests := g.destinations()
		n := 0
		for id, t := range byID {
			if _, own := selected[id]; !own && len(g.selectedByOthers(t)) > 0 {
				continue // another group's table, though it routes via a member
			}
			for _, rt := range t.Routes {
				if !slices.Contains(dests, aws.ToString(rt.DestinationCidrBlock)) {
					continue
				}
				if instances[aws.ToString(rt.InstanceId)] || enis[aws.ToString(rt.NetworkInterfaceId)] {
					selected[id] = t
					n++
					break
				}
			}
		}
		if n == 0 {
			r.problems = append(r.problems, fmt.Sprintf("no route table in %s routes %s via a cluster member", m.vpcID, strings.Join(dests, ", ")))
		}
	}

	// Configured tables outside the VPC: say where they are, or that they do not exist.
	if len(elsewhere) > 0 {
		found, err := c.describeRouteTables(ctx, []types.Filter{{Name: aws.String("route-table-id"), Values: elsewhere}})
		if err != nil {
			r.err = fmt.Errorf("describe route tables %s: %w", strings.Join(elsewhere, ","), err)
		}
		for _, t := range found {
			id := aws.ToString(t.RouteTableId)
			selected[id] = t
			r.all[id] = t
			r.problems = append(r.problems, fmt.Sprintf("route table %s is in %s, not in %s", id, aws.ToString(t.VpcId), m.vpcID))
		}
		if err == nil {
			for _, id := range elsewhere {
				if _, ok := selected[id]; !ok {
					r.missing = append(r.missing, id)
					r.problems = append(r.problems, fmt.Sprintf("route table %s not found", id))
				}
			}
		}
	}

	for _, id := range slices.Sorted(maps.Keys(selected)) {
		t := selected[id]
		r.tables = append(r.tables, t)
		if slices.Contains(g.RouteTableIDs, id) || (len(g.RouteTableTags) > 0 && hasTags(t.Tags, g.RouteTableTags)) {
			for _, other := range g.selectedByOthers(t) {
				r.problems = append(r.problems, fmt.Sprintf("route table %s is selected by group %q too", id, other))
			}
		}
	}
	return r
}

// memberTargets returns the instance and network interface ids of the cluster members,
// self included.
func (c *Client) memberTargets(g Group, m me) (instances, enis map[string]bool) {
	instances, enis = map[string]bool{m.instanceID: true}, map[string]bool{}
	for _, e := range m.enis {
		enis[e] = true
	}
	if m.eni != "" {
		enis[m.eni] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range g.DiscoverTargets {
		instances[id] = true
		for _, e := range c.instances[id].enis {
			enis[e] = true
		}
	}
	return instances, enis
}

func hasTags(tags []types.Tag, want map[string]string) bool {
	for k, v := range want {
		ok := false
		for _, t := range tags {
			if aws.ToString(t.Key) == k && aws.ToString(t.Value) == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func formatTags(tags map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		parts = append(parts, k+"="+tags[k])
	}
	return strings.Join(parts, ",")
}

// routesOf lists the group's destinations in each table, sorted.
func (c *Client) routesOf(tables []types.RouteTable, dests []string) []Route {
	var out []Route
	for _, t := range tables {
		for _, d := range dests {
			out = append(out, c.routeIn(t, d))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].RouteTableID != out[j].RouteTableID {
			return out[i].RouteTableID < out[j].RouteTableID
		}
		return out[i].Destination < out[j].Destination
	})
	return out
}

// routeIn describes destination d in table t; an interface target is attributed to the instance
// it belongs to when known.
func (c *Client) routeIn(t types.RouteTable, d string) Route {
	r := Route{RouteTableID: aws.ToString(t.RouteTableId), Destination: d, State: RouteMissing, Associated: carriesTraffic(t)}
	for _, rt := range t.Routes {
		if aws.ToString(rt.DestinationCidrBlock) != d {
			continue
		}
		r.InstanceID = aws.ToString(rt.InstanceId)
		r.ENIID = aws.ToString(rt.NetworkInterfaceId)
		r.State = string(rt.State)
		if r.State == "" {
			r.State = RouteActive
		}
		if r.InstanceID == "" && r.ENIID != "" {
			c.mu.Lock()
			r.InstanceID = c.eniOwner[r.ENIID]
			c.mu.Unlock()
		}
		if r.InstanceID == "" && r.ENIID == "" {
			r.OtherTarget = firstNonEmpty(rt.GatewayId, rt.NatGatewayId, rt.TransitGatewayId,
				rt.VpcPeeringConnectionId, rt.EgressOnlyInternetGatewayId, rt.LocalGatewayId,
				rt.CarrierGatewayId, rt.CoreNetworkArn)
		}
		break
	}
	return r
}

// carriesTraffic reports whether subnets use table t: an associated subnet, or t is the
// VPC's main table.
func carriesTraffic(t types.RouteTable) bool {
	for _, a := range t.Associations {
		if a.AssociationState != nil && a.AssociationState.State != types.RouteTableAssociationStateCodeAssociated &&
			a.AssociationState.State != types.RouteTableAssociationStateCodeAssociating {
			continue
		}
		if aws.ToBool(a.Main) || aws.ToString(a.SubnetId) != "" {
			return true
		}
	}
	return false
}

func firstNonEmpty(ss ...*string) string {
	for _, s := range ss {
		if v := aws.ToString(s); v != "" {
			return v
		}
	}
	return ""
}

// read is one look at a group's Elastic IP and route tables, both read in parallel.
func (c *Client) read(ctx context.Context, g Group, m me) (eipRead, tablesRead) {
	var (
		er eipRead
		tr tablesRead
		wg sync.WaitGroup
	)
	if g.ElasticIP != "" {
		wg.Go(func() { er = c.readEIP(ctx, g.ElasticIP) })
	}
	tr = c.readTables(ctx, g, m)
	wg.Wait()
	return er, tr
}

// Observe reads what EC2 reports for g: typically one DescribeAddresses and one
// DescribeRouteTables (in parallel), then one DescribeInstances for the instances they name.
// Errors are returned only when EC2 could not be read; findings such as an unknown route table
// are listed in Problems.
//
// EC2 is eventually consistent: an Observe shortly after a change, this client's own Claim
// included, may return the state from before it. A caller must not treat such a read as new
// drift and act on it twice; Claim is idempotent and verifies by reading back, so a claim made
// on a stale read only costs calls.
func (c *Client) Observe(ctx context.Context, g Group, self Self) (Observation, error) {
	m, err := c.resolveSelf(ctx, g, self)
	if err != nil {
		return Observation{}, fmt.Errorf("observe group %q: %w", g.Name, err)
	}
	er, tr := c.read(ctx, g, m)
	obs := Observation{ReadAt: time.Now()}
	if err := errors.Join(er.err, tr.err); err != nil {
		return obs, fmt.Errorf("observe group %q: %w", g.Name, err)
	}
	obs.EIP = er.eip
	if g.ElasticIP != "" && !er.found {
		obs.Problems = append(obs.Problems, fmt.Sprintf("elastic ip %s not found", g.ElasticIP))
	}
	obs.Problems = append(obs.Problems, tr.problems...)
	obs.Routes = c.routesOf(tr.tables, g.destinations())

	ids := []string{self.InstanceID}
	add := func(id string) {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	add(obs.EIP.InstanceID)
	for _, r := range obs.Routes {
		add(r.InstanceID)
	}
	inst, err := c.describeInstances(ctx, ids)
	if err != nil {
		return obs, fmt.Errorf("observe group %q: %w", g.Name, err)
	}
	obs.Instances = make(map[string]Instance, len(ids))
	for _, id := range ids {
		if in, ok := inst[id]; ok {
			obs.Instances[id] = in
		} else {
			obs.Instances[id] = Instance{ID: id, State: InstanceStateUnknown}
		}
	}
	// Interfaces learnt just now may name the instance behind an interface-only target.
	for i, r := range obs.Routes {
		if r.InstanceID == "" && r.ENIID != "" {
			c.mu.Lock()
			owner := c.eniOwner[r.ENIID]
			c.mu.Unlock()
			if _, ok := obs.Instances[owner]; ok {
				obs.Routes[i].InstanceID = owner
			}
		}
	}
	if g.PinAddress {
		// The interfaces were read just now: an address assigned since the last read counts.
		c.mu.Lock()
		info := c.instances[self.InstanceID]
		c.mu.Unlock()
		m.pinAddress(g, info)
		obs.Address = m.addr
		if g.ElasticIP != "" && m.owns(obs.EIP.InstanceID, obs.EIP.ENIID) && m.addr.Want != "" && obs.EIP.PrivateIP != m.addr.Want {
			obs.Misplaced = fmt.Sprintf("elastic ip %s is on %s of this instance, not on %s", g.ElasticIP, orNone(obs.EIP.PrivateIP), m.addr.Want)
		}
		c.noteSubnets(ctx, g, tr.tables, &obs)
	}
	obs.ReadAt = time.Now()
	return obs, nil
}
