package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/natganker/natganker/ec2/ec2test"
)

// The zones lab is the deployment the README's guide describes: two zones, one group per
// zone, each zone's NAT primary for its own zone's group, and a third NAT the standby of both.
// Every NAT has one interface (eth0) with a primary and a secondary private address, as a
// NAT instance in a public subnet does, so that it can hold both groups' Elastic IPs at once
// (the second group's on its secondary address). Each zone has a client in a subnet of its
// own whose route table is its group's. The internet gateway maps each Elastic IP to the
// private address EC2 associated it with, which moto does not track: the agents talk to EC2
// through ec2test's proxy with AssociateAsEC2, which records it.
const (
	Nat3    = "nat3"
	ClientA = "clienta"
	ClientB = "clientb"

	// GroupA and GroupB are the two zones' groups; sorted by name, so that A's Elastic IP
	// goes on a NAT's primary address and B's on its secondary one.
	GroupA = "az-a"
	GroupB = "az-b"

	Nat3IP        = "198.18.1.13"
	ClientAIP     = "198.18.1.100" // in 198.18.1.96/28, zone a's private subnet
	ClientBIP     = "198.18.1.120" // in 198.18.1.112/28, zone b's
	zonesGateway  = "198.18.1.1"   // the internet gateway on the VPC side
	ElasticIPB    = "198.19.0.9"
	Nat3Public    = "198.19.0.13"
	zonesPriority = 300 // a zone's own NAT; the standby has 200, the other zone's NAT 100
	// WhoamiPort is inet's UDP service that answers with the source address it saw.
	WhoamiPort = 11
)

// ZoneNATs are the zones lab's NATs: nat1 in zone a, nat2 in zone b, nat3 the standby.
var ZoneNATs = []string{Nat1, Nat2, Nat3}

// zoneNatIP is a zones-lab NAT's primary private address; zoneNatIP2 its secondary.
func zoneNatIP(host string) string {
	switch host {
	case Nat1:
		return Nat1IP
	case Nat2:
		return Nat2IP
	}
	return Nat3IP
}

func zoneNatIP2(host string) string {
	return strings.Replace(zoneNatIP(host), "198.18.1.1", "198.18.1.2", 1)
}

func zoneNatPublic(host string) string {
	switch host {
	case Nat1:
		return Nat1Public
	case Nat2:
		return Nat2Public
	}
	return Nat3Public
}

// ZonePriority is the priority of host's agent in group: its own zone's NAT first, the
// standby second, the other zone's NAT last.
func ZonePriority(host, group string) int {
	switch {
	case host == Nat3:
		return 200
	case (host == Nat1) == (group == GroupA):
		return zonesPriority
	}
	return 100
}

// ZoneWorld is what the zones lab seeded into moto besides the instances.
type ZoneWorld struct {
	// Tables and Allocs are each group's route table and Elastic IP allocation.
	Tables, Allocs map[string]string
	// Subnets are the zones' client subnets by group.
	Subnets map[string]string
}

// buildZonesTopology creates the zones lab's namespaces: the three NATs, the two clients,
// the internet gateway and the internet on the VPC bridge and the internet bridge.
func buildZonesTopology(ctx context.Context) error {
	if err := addHosts(ctx, append(slices.Clone(ZoneNATs), ClientA, ClientB, IGW, Inet, swtch)...); err != nil {
		return err
	}
	if err := addBridges(ctx, "brvpc", "brinet"); err != nil {
		return err
	}
	wires := []wire{
		{ClientA, "eth0", "brvpc", "clienta-vpc", []string{ClientAIP}},
		{ClientB, "eth0", "brvpc", "clientb-vpc", []string{ClientBIP}},
		{IGW, "pub0", "brvpc", "igw-vpc", []string{zonesGateway}},
		{IGW, "inet0", "brinet", "igw-inet", []string{IGWInetIP}},
		{Inet, "eth0", "brinet", "inet-pub", []string{InetIP}},
	}
	for _, h := range ZoneNATs {
		wires = append(wires, wire{h, "eth0", "brvpc", h + "-vpc", []string{zoneNatIP(h), zoneNatIP2(h)}})
	}
	for _, w := range wires {
		if err := connect(ctx, w); err != nil {
			return err
		}
	}
	if err := connectRoot(ctx, "brvpc"); err != nil {
		return err
	}
	for _, nat := range ZoneNATs {
		if err := natBasics(ctx, nat); err != nil {
			return err
		}
		if err := zonesDefaultRoute(ctx, nat); err != nil {
			return err
		}
	}
	for _, c := range []string{ClientA, ClientB} {
		if err := nsIP(ctx, NS(c), "route", "replace", "unreachable", "default"); err != nil {
			return err
		}
	}
	if err := nsIP(ctx, NS(Inet), "route", "add", PublicRange, "via", IGWInetIP, "dev", "eth0"); err != nil {
		return err
	}
	return startIGW(ctx, nil)
}

// zonesDefaultRoute points a zones-lab NAT's default route at the internet gateway.
func zonesDefaultRoute(ctx context.Context, host string) error {
	return nsIP(ctx, NS(host), "route", "replace", "default", "via", zonesGateway, "dev", "eth0")
}

// seedZones creates the zones lab's VPC in moto: the NATs' subnet, one client subnet per
// zone, the three NATs with a secondary private address each, one route table per zone
// (associated with its client subnet, default route to the zone's NAT) and one Elastic IP
// per zone on its NAT, B's on nat2's secondary address. The associations go through the
// proxy (p), which records where EC2 would have put them.
func seedZones(ctx context.Context, c, p *ec2.Client) (World, error) {
	w := World{Instances: map[string]Instance{}, Zones: &ZoneWorld{Tables: map[string]string{}, Allocs: map[string]string{}, Subnets: map[string]string{}}}
	var err error
	if w.VPCID, err = createVPC(ctx, c); err != nil {
		return w, err
	}
	subnet := func(cidr string) (string, error) { return createSubnet(ctx, c, w.VPCID, cidr) }
	if w.PublicSubnet, err = subnet("198.18.1.0/26"); err != nil {
		return w, err
	}
	for g, cidr := range map[string]string{GroupA: "198.18.1.96/28", GroupB: "198.18.1.112/28"} {
		if w.Zones.Subnets[g], err = subnet(cidr); err != nil {
			return w, err
		}
	}
	for _, h := range ZoneNATs {
		inst, err := runNAT(ctx, c, w.PublicSubnet, h, zoneNatIP(h))
		if err != nil {
			return w, err
		}
		if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(inst.ENI),
			PrivateIpAddresses: []string{zoneNatIP2(h)}}); err != nil {
			return w, fmt.Errorf("assign a secondary address to %s: %w", h, err)
		}
		w.Instances[h] = inst
	}
	for g, nat := range map[string]string{GroupA: Nat1, GroupB: Nat2} {
		rt, err := c.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{VpcId: aws.String(w.VPCID),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeRouteTable,
				Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String("lab-" + g)}}}}})
		if err != nil {
			return w, fmt.Errorf("create route table %s: %w", g, err)
		}
		id := *rt.RouteTable.RouteTableId
		if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &id, DestinationCidrBlock: aws.String("0.0.0.0/0"),
			InstanceId: aws.String(w.Instances[nat].ID)}); err != nil {
			return w, fmt.Errorf("create default route in %s: %w", id, err)
		}
		if _, err := c.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{RouteTableId: &id, SubnetId: aws.String(w.Zones.Subnets[g])}); err != nil {
			return w, fmt.Errorf("associate %s with zone %s's subnet: %w", id, g, err)
		}
		w.Zones.Tables[g] = id
	}
	for _, z := range []struct{ group, address, nat, private string }{
		{GroupA, ElasticIP, Nat1, zoneNatIP(Nat1)},
		{GroupB, ElasticIPB, Nat2, zoneNatIP2(Nat2)},
	} {
		eip, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc, Address: aws.String(z.address)})
		if err != nil {
			return w, fmt.Errorf("allocate %s: %w", z.address, err)
		}
		if got := aws.ToString(eip.PublicIp); got != z.address {
			return w, fmt.Errorf("allocate %s: moto gave %s", z.address, got)
		}
		if _, err := p.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: eip.AllocationId,
			InstanceId: aws.String(w.Instances[z.nat].ID), PrivateIpAddress: aws.String(z.private)}); err != nil {
			return w, fmt.Errorf("associate %s with %s: %w", z.address, z.nat, err)
		}
		w.Zones.Allocs[z.group] = *eip.AllocationId
	}
	w.AllocationID, w.PublicIP = w.Zones.Allocs[GroupA], ElasticIP
	w.ClientTable = w.Zones.Tables[GroupA]
	return w, nil
}

// upZones is Up for the zones lab (Options.Zones).
func (l *Lab) upZones(ctx context.Context, start time.Time) error {
	if err := buildZonesTopology(ctx); err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	l.tl.Add(time.Now(), "lab", "zones lab up: nat1 %s (zone a), nat2 %s (zone b), nat3 %s (standby), clients %s and %s",
		Nat1IP, Nat2IP, Nat3IP, ClientAIP, ClientBIP)
	if err := l.startMoto(ctx); err != nil {
		return err
	}
	if l.opts.Proxy == nil {
		l.opts.Proxy = &ec2test.ProxyOptions{}
	}
	l.opts.Proxy.AssociateAsEC2 = true
	if err := l.startProxy(); err != nil {
		return err
	}
	w, err := seedZones(ctx, l.ec2, newEC2(l.AgentEndpoint()))
	if err != nil {
		return fmt.Errorf("seed moto: %w", err)
	}
	l.world = w
	l.tl.Add(time.Now(), "moto", "seeded %s: %s (%s, table %s) on nat1, %s (%s, table %s) on nat2's secondary address",
		l.world.VPCID, GroupA, ElasticIP, l.world.Zones.Tables[GroupA], GroupB, ElasticIPB, l.world.Zones.Tables[GroupB])
	if err := l.startServices(ctx, "eth0"); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.zfol = &zonesFollower{c: l.ec2, w: l.world, tl: l.tl, changed: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.zfol.run(rctx)
	}()
	if err := l.WaitZones(ctx, ZoneLayout{GroupA: Nat1, GroupB: Nat2}, 10*time.Second); err != nil {
		return err
	}
	l.logger.Info("zones lab up", "took", time.Since(start).Round(time.Millisecond), "dir", l.opts.Dir)
	return nil
}

// ZoneLayout is where moto says each group is: the lab host holding its Elastic IP and its
// route, "split(EIP host, route host)" when they differ, "" when neither is anywhere.
type ZoneLayout map[string]string

// zoneState is one read of moto for the zones stand-in.
type zoneState struct {
	layout ZoneLayout
	route  map[string]string // group → host its route table targets
	eip    map[string]string // group → private address its Elastic IP is associated with
}

// readZones reads the groups' Elastic IPs and route tables from moto (directly).
func readZones(ctx context.Context, c *ec2.Client, w World) (zoneState, error) {
	s := zoneState{layout: ZoneLayout{}, route: map[string]string{}, eip: map[string]string{}}
	z := w.Zones
	ao, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{z.Allocs[GroupA], z.Allocs[GroupB]}})
	if err != nil {
		return s, fmt.Errorf("describe addresses: %w", err)
	}
	eipHost := map[string]string{}
	for _, a := range ao.Addresses {
		g := GroupA
		if aws.ToString(a.AllocationId) == z.Allocs[GroupB] {
			g = GroupB
		}
		eni, private := aws.ToString(a.NetworkInterfaceId), ""
		if eni == "" {
			continue
		}
		for _, t := range a.Tags {
			if aws.ToString(t.Key) != ec2test.AddressTag {
				continue
			}
			// "eni-…/address", current only while moto still puts the address on that interface.
			if tagENI, addr, ok := strings.Cut(aws.ToString(t.Value), "/"); ok && tagENI == eni {
				private = addr
			}
		}
		if private == "" {
			// The proxy records the address once moto has answered the association: a read
			// in between shows the new interface without it. EC2 has no such moment.
			return s, fmt.Errorf("%s's association is being recorded", g)
		}
		s.eip[g] = private
		eipHost[g] = w.HostOf(w.instanceOfENI(eni))
	}
	rt, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{z.Tables[GroupA], z.Tables[GroupB]}})
	if err != nil {
		return s, fmt.Errorf("describe route tables: %w", err)
	}
	for _, t := range rt.RouteTables {
		g := GroupA
		if aws.ToString(t.RouteTableId) == z.Tables[GroupB] {
			g = GroupB
		}
		for _, r := range t.Routes {
			if aws.ToString(r.DestinationCidrBlock) == "0.0.0.0/0" && r.State != ec2types.RouteStateBlackhole {
				s.route[g] = w.HostOf(aws.ToString(r.InstanceId))
			}
		}
	}
	for _, g := range []string{GroupA, GroupB} {
		e, r := eipHost[g], s.route[g]
		if e != r {
			s.layout[g] = fmt.Sprintf("split(%s,%s)", orNone(e), orNone(r))
		} else {
			s.layout[g] = e
		}
	}
	return s, nil
}

// zonesFollower is the zones lab's VPC stand-in: it routes each client by its zone's route
// table and maps each Elastic IP to the private address it is associated with.
type zonesFollower struct {
	c  *ec2.Client
	w  World
	tl *Timeline

	mu      sync.Mutex
	last    zoneState
	read    bool
	changed chan struct{}
}

func (f *zonesFollower) run(ctx context.Context) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	var applied zoneState
	first := true
	for {
		if s, err := readZones(ctx, f.c, f.w); err == nil {
			if err := f.apply(ctx, s, applied, first); err == nil {
				applied, first = s, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *zonesFollower) apply(ctx context.Context, s, prev zoneState, first bool) error {
	var errs []error
	for g, client := range map[string]string{GroupA: ClientA, GroupB: ClientB} {
		if !first && s.route[g] == prev.route[g] {
			continue
		}
		var err error
		if h := s.route[g]; h == "" {
			err = nsIP(ctx, NS(client), "route", "replace", "unreachable", "default")
		} else {
			err = nsIP(ctx, NS(client), "route", "replace", "default", "via", zoneNatIP(h), "dev", "eth0")
		}
		errs = append(errs, err)
		if err == nil {
			f.tl.Add(time.Now(), "vpc", "zone %s's route table → %s: %s's default route now via it", g, orNone(s.route[g]), client)
		}
	}
	if first || !mapsEqual(s.eip, prev.eip) {
		err := nftIn(ctx, IGW, igwScript(zonesMapping(s.eip)))
		errs = append(errs, err)
		if err == nil {
			f.tl.Add(time.Now(), "vpc", "internet gateway: %s → %s, %s → %s", ElasticIP, orNone(s.eip[GroupA]), ElasticIPB, orNone(s.eip[GroupB]))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.read || !mapsEqual(f.last.layout, s.layout) {
		f.tl.Add(time.Now(), "moto", "%s on %s, %s on %s", GroupA, orNone(s.layout[GroupA]), GroupB, orNone(s.layout[GroupB]))
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.last, f.read = s, true
	return nil
}

// zonesMapping is the gateway's mapping for Elastic IPs on the given private addresses: each
// Elastic IP to its address, every NAT's primary address that holds none to the NAT's own
// public address. A secondary address without an Elastic IP has no public address.
func zonesMapping(eip map[string]string) [][2]string {
	var pairs [][2]string
	taken := map[string]bool{}
	for g, public := range map[string]string{GroupA: ElasticIP, GroupB: ElasticIPB} {
		if a := eip[g]; a != "" {
			pairs = append(pairs, [2]string{a, public})
			taken[a] = true
		}
	}
	for _, h := range ZoneNATs {
		if !taken[zoneNatIP(h)] {
			pairs = append(pairs, [2]string{zoneNatIP(h), zoneNatPublic(h)})
		}
	}
	slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return pairs
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Zones returns where moto last said each group is.
func (l *Lab) Zones() ZoneLayout {
	f := l.zfol
	f.mu.Lock()
	defer f.mu.Unlock()
	out := ZoneLayout{}
	for g, h := range f.last.layout {
		out[g] = h
	}
	return out
}

// WaitZones waits until moto shows each group of want on its host.
func (l *Lab) WaitZones(ctx context.Context, want ZoneLayout, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f := l.zfol
	for {
		f.mu.Lock()
		got, ch := f.last.layout, f.changed
		ok := f.read && mapsEqual(got, want)
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %v (now %v): %w", want, got, ctx.Err())
		case <-ch:
		}
	}
}

// zonesAgentConfig is the agent configuration of a zones-lab NAT: both groups, with the
// zone's own NAT first.
func (l *Lab) zonesAgentConfig(host string) string {
	var peers []string
	for _, h := range ZoneNATs {
		if h != host {
			peers = append(peers, fmt.Sprintf("%q", zoneNatIP(h)+":7946"))
		}
	}
	failback := ""
	if l.opts.FailbackDelay > 0 {
		failback = fmt.Sprintf("\n  failback_delay = %q", l.opts.FailbackDelay.String())
	}
	var groups strings.Builder
	for _, g := range []string{GroupA, GroupB} {
		fmt.Fprintf(&groups, `
group %q {
  priority     = %d
  elastic_ip   = %q
  route_tables = [%q]%s
}
`, g, ZonePriority(host, g), l.world.Zones.Allocs[g], l.world.Zones.Tables[g], failback)
	}
	return fmt.Sprintf(`# natganker agent on zones-lab host %[1]s
gossip {
  bind        = "%[2]s:7946"
  peers       = [%[3]s]
  encrypt_key = "%[4]s"
}
%[5]s
ec2 {
  endpoint = "%[6]s"
  region   = "%[7]s"
}

control {
  socket     = "%[8]s"
  state_file = "%[9]s/%[1]s-state.json"
}

log {
  level  = "info"
  format = "json"
}

datapath {
  manage           = true
  public_interface = "eth0"
}
`, host, zoneNatIP(host), strings.Join(peers, ", "), l.gossipKey(), groups.String(), l.AgentEndpoint(), Region,
		l.AgentSocket(host), l.opts.Dir)
}

// Whoami asks inet's whoami service, from inside host's namespace, which source address it
// sees: the public address the host's traffic leaves with.
func Whoami(host string, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := inNamespace(host, func() error {
		var err error
		conn, err = net.Dial("udp", net.JoinHostPort(InetIP, fmt.Sprint(WhoamiPort)))
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := conn.Write([]byte("?")); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// inNamespace runs fn on a thread in host's network namespace: a socket fn creates stays in
// that namespace.
func inNamespace(host string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer unix.Close(self)
	target, err := unix.Open("/run/netns/"+NS(host), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace of %s: %w", host, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter namespace of %s: %w", host, err)
	}
	ferr := fn()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		// The thread cannot go back: it must not run anything else. Locked and never
		// unlocked, it ends with this goroutine.
		runtime.LockOSThread()
		return fmt.Errorf("leave namespace of %s: %w", host, err)
	}
	return ferr
}
