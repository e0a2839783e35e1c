package agent

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/ec2/ec2test"
)

func TestAddressIndex(t *testing.T) {
	cfg := &config.Config{Groups: []config.Group{{Name: "az-c"}, {Name: "az-a"}, {Name: "az-b"}}}
	for name, want := range map[string]int{"az-a": 0, "az-b": 1, "az-c": 2} {
		if got, pin := addressIndex(cfg, name); got != want || !pin {
			t.Errorf("%s: index %d, pinned %v; want %d, pinned", name, got, pin, want)
		}
		if s := GroupSpec(cfg, *must(cfg.Group(name)), nil); s.AddressIndex != want || !s.PinAddress {
			t.Errorf("%s: spec index %d, pinned %v", name, s.AddressIndex, s.PinAddress)
		}
	}
	one := &config.Config{Groups: []config.Group{{Name: "egress"}}}
	if got, pin := addressIndex(one, "egress"); got != 0 || pin {
		t.Errorf("one group: index %d, pinned %v; want 0, not pinned", got, pin)
	}
}

func must[T any](v T, ok bool) T {
	if !ok {
		panic("not found")
	}
	return v
}

func TestNoRoomReason(t *testing.T) {
	cfg := &config.Config{Groups: []config.Group{{Name: "a"}, {Name: "b"}, {Name: "c"}}}
	tests := []struct {
		name, group string
		addr        ec2.Address
		want        string
	}{
		{"Room", "b", ec2.Address{ENIID: "eni-1", Index: 1, Want: "10.0.0.100", Have: []string{"10.0.0.10", "10.0.0.100"}}, ""},
		{"NotPinned", "b", ec2.Address{}, ""},
		{"SecondGroup", "b", ec2.Address{ENIID: "eni-1", Index: 1, Have: []string{"10.0.0.10"}},
			`cannot hold group "b"'s Elastic IP beside group "a"'s: interface eni-1 has 1 private address; assign it a secondary private IP`},
		{"ThirdGroup", "c", ec2.Address{ENIID: "eni-1", Index: 2, Have: []string{"10.0.0.10"}},
			`cannot hold group "c"'s Elastic IP beside groups "a"'s and "b"'s: interface eni-1 has 1 private address; assign it 2 more secondary private IPs`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NoRoomReason(cfg, tt.group, tt.addr); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestDecide_Addresses(t *testing.T) {
	noRoom := func(p Peer) Peer { p.NoRoom = "cannot hold…"; return p }
	tests := []struct {
		name    string
		view    func(v *View)
		want    Action
		desired string
		reason  string
	}{
		{name: "PeerWithoutRoomIsNotDesired", view: func(v *View) {
			v.Peers["a"] = noRoom(dead("a", 200))
			v.Owner = ""
		}, want: ActClaim, desired: "b", reason: "not associated"},
		{name: "OwnerWithoutRoomIsReplaced", view: func(v *View) { v.Peers["a"] = noRoom(alive("a", 200)) },
			want: ActClaim, desired: "b", reason: "owner a cannot hold"},
		{name: "SelfWithoutRoomTakesNothing", view: func(v *View) {
			v.Peers["a"] = dead("a", 200)
			v.OwnerConfirmedDead = true
			v.Peers["b"] = noRoom(v.Peers["b"])
		}, want: ActNone, reason: "not eligible (cannot hold"},
		{name: "ElasticIPOnAnotherAddressOfSelfIsDrift", view: func(v *View) {
			v.Owner = "b"
			v.Peers["a"] = dead("a", 200)
			v.Misplaced = "elastic ip eipalloc-1 is on 10.0.0.10 of this instance, not on 10.0.0.100"
		}, want: ActClaim, desired: "b", reason: "repair: elastic ip eipalloc-1 is on 10.0.0.10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := base()
			tt.view(&v)
			got := Decide(v)
			if got.Action != tt.want || (tt.desired != "" && got.Desired != tt.desired) || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("got %v (desired %q, %q); want %v (desired %q, reason containing %q)", got.Action, got.Desired, got.Reason, tt.want, tt.desired, tt.reason)
			}
		})
	}
}

// TestCluster_TwoGroupsOnOneNAT: two zones' groups, a NAT each; one NAT dies and the other
// holds both. EC2 (the proxy in front of moto associates as EC2 does) lets one Elastic IP sit
// on a private address: associating a second displaces the first. So the survivor must put
// the two on its two private addresses; were it to associate both with its instance, each
// group's repair would displace the other's Elastic IP, round after round, for ever.
func TestCluster_TwoGroupsOnOneNAT(t *testing.T) {
	c := newCluster(t, 0, 0)
	c.asEC2 = true
	c.withProxies()
	ctx := context.Background()
	eipB, err := c.api.AllocateAddress(ctx, &awsec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	allocA, allocB := c.world.AllocationID, aws.ToString(eipB.AllocationId)
	c.groups = func(i int) string {
		prioA, prioB := 200, 100
		if i == 1 {
			prioA, prioB = 100, 200
		}
		return zoneGroups(prioA, allocA, c.world.RouteTableIDs[0], prioB, allocB, c.world.RouteTableIDs[1])
	}
	// Read through a proxy: it reports the private address each Elastic IP sits on.
	api := ec2test.API(c.endpoints[0], c.world.Region)
	layout := func() (a, b string) {
		t.Helper()
		out, err := api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{allocA, allocB}})
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range out.Addresses {
			at := aws.ToString(ad.InstanceId) + " " + aws.ToString(ad.PrivateIpAddress)
			if aws.ToString(ad.AssociationId) == "" {
				at = "unassociated"
			}
			if aws.ToString(ad.AllocationId) == allocA {
				a = at
			} else {
				b = at
			}
		}
		return a, b
	}
	nat1, nat2 := c.world.Instances[0], c.world.Instances[1]
	// on reports whether both Elastic IPs are on the instances wanted, on distinct addresses.
	on := func(a, b, wantA, wantB string) bool {
		return strings.HasPrefix(a, wantA+" ") && strings.HasPrefix(b, wantB+" ") && a != b
	}
	waitOn := func(wantA, wantB string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			a, b := layout()
			if on(a, b, wantA, wantB) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("az-a's Elastic IP on %s, az-b's on %s; want them on %s and %s (AssociateAddress calls: %d, Elastic IPs displaced: %d)",
					a, b, wantA, wantB, c.proxies[0].Stats()["AssociateAddress"], c.proxies[0].Displaced())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	c.up()
	waitOn(nat1.ID, nat2.ID)

	c.kill(1)
	waitOn(nat1.ID, nat1.ID)
	// Five reconciles (1 s each): both stay, and no further AssociateAddress is made.
	calls := c.proxies[0].Stats()["AssociateAddress"]
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if a, b := layout(); !on(a, b, nat1.ID, nat1.ID) {
			t.Fatalf("az-a's Elastic IP on %s, az-b's on %s; want both to stay on %s", a, b, nat1.ID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := c.proxies[0].Stats()["AssociateAddress"]; n != calls {
		t.Errorf("nat1 made %d AssociateAddress calls while holding both groups, want none", n-calls)
	}
	// The groups by name: az-a on the primary address, az-b on the secondary one.
	if a, b := layout(); a != nat1.ID+" "+nat1.PrivateIP || b != nat1.ID+" "+nat1.SecondaryIPs[0] {
		t.Errorf("az-a's Elastic IP on %s, az-b's on %s; want the primary and the secondary address", a, b)
	}
	for i, p := range c.proxies {
		if n := p.Displaced(); n != 0 {
			t.Errorf("nat%d displaced %d Elastic IPs, want none", i+1, n)
		}
	}
}

func TestSourceNATRules(t *testing.T) {
	have := []string{"10.0.0.10", "10.0.0.100", "10.0.0.101"}
	read := func(group string, index int, subnets ...string) GroupRead {
		a := ec2.Address{ENIID: "eni-1", Index: index, Have: have}
		if index < len(have) {
			a.Want = have[index]
		}
		return GroupRead{Group: group, Obs: ec2.Observation{Address: a, SubnetCIDRs: subnets}}
	}
	prefixes := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := []struct {
		name  string
		reads []GroupRead
		want  []datapath.SourceNAT
	}{
		{"OneGroup", []GroupRead{{Group: "egress", Obs: ec2.Observation{SubnetCIDRs: []string{"10.0.1.0/24"}}}}, nil},
		{"FirstGroupIsMasqueraded", []GroupRead{read("az-a", 0, "10.0.1.0/24")}, nil},
		{"SecondGroup", []GroupRead{read("az-a", 0), read("az-b", 1, "10.0.2.0/24", "10.0.3.0/24")},
			[]datapath.SourceNAT{{Group: "az-b", To: netip.MustParseAddr("10.0.0.100"), Sources: prefixes("10.0.2.0/24", "10.0.3.0/24")}}},
		{"InAddressOrder", []GroupRead{read("az-c", 2, "10.0.4.0/24"), read("az-b", 1, "10.0.2.0/24")},
			[]datapath.SourceNAT{
				{Group: "az-b", To: netip.MustParseAddr("10.0.0.100"), Sources: prefixes("10.0.2.0/24")},
				{Group: "az-c", To: netip.MustParseAddr("10.0.0.101"), Sources: prefixes("10.0.4.0/24")},
			}},
		{"NoAddressHere", []GroupRead{read("az-d", 3, "10.0.5.0/24")}, nil},
		{"NoSubnets", []GroupRead{read("az-b", 1)}, nil},
		{"OwnSubnetLeftOut", []GroupRead{read("az-b", 1, "10.0.0.0/24", "10.0.2.0/24")},
			[]datapath.SourceNAT{{Group: "az-b", To: netip.MustParseAddr("10.0.0.100"), Sources: prefixes("10.0.2.0/24")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SourceNATRules(tt.reads); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// subnetCloud is the fake EC2 with two pinned groups: each read says where the group's
// Elastic IP goes on this node and, for the second group, which subnets its tables route.
type subnetCloud struct {
	*fakeCloud
	mu      sync.Mutex
	subnets []string
}

func (c *subnetCloud) Observe(ctx context.Context, g ec2.Group, self ec2.Self) (ec2.Observation, error) {
	obs, err := c.fakeCloud.Observe(ctx, g, self)
	have := []string{"10.0.0.10", "10.0.0.100"}
	obs.Address = ec2.Address{ENIID: "eni-1", Index: g.AddressIndex, Want: have[g.AddressIndex], Have: have}
	if g.AddressIndex > 0 {
		c.mu.Lock()
		obs.SubnetCIDRs = slices.Clone(c.subnets)
		c.mu.Unlock()
	}
	return obs, err
}

// snatDatapath is a managed datapath that installs its source NAT rules when Ensure runs,
// and reports itself stale in between, as datapath.Datapath does.
type snatDatapath struct {
	mu                       sync.Mutex
	want, installed          []datapath.SourceNAT
	ensures, updates, checks int
}

func (d *snatDatapath) SetSourceNAT(rules []datapath.SourceNAT) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.want = rules
}

func (d *snatDatapath) Ensure(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ensures++
	if !reflect.DeepEqual(d.want, d.installed) {
		d.updates++
	}
	d.installed = d.want
	return nil
}

func (d *snatDatapath) Check(ctx context.Context) datapath.Health {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checks++
	return datapath.Health{Healthy: true, Stale: !reflect.DeepEqual(d.want, d.installed)}
}

func (d *snatDatapath) installedRules() []datapath.SourceNAT {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.installed
}

// TestAgent_SourceNAT: the agent hands the managed datapath the second group's subnets and
// private address from its reads of EC2, and the datapath's next check installs them; a
// change of the subnets in EC2 follows at the next read.
func TestAgent_SourceNAT(t *testing.T) {
	cfg := loopConfig(200, time.Second)
	cfg.Datapath.Manage = true
	cfg.EC2.ReconcileInterval = 50 * time.Millisecond // the subnets' change is read soon
	b := config.DefaultGroup("az-b")
	b.Priority, b.ElasticIP = 200, "eipalloc-2"
	cfg.Groups[0].Name = "az-a"
	cfg.Groups = append(cfg.Groups, b)
	cloud := &subnetCloud{fakeCloud: newFakeCloud("i-a", "rtb-1"), subnets: []string{"10.0.2.0/24"}}
	dp := &snatDatapath{}
	l := startLoopWith(t, "i-a", cfg, cloud.fakeCloud, func(d *Deps) { d.Cloud, d.Health = cloud, dp })

	want := []datapath.SourceNAT{{Group: "az-b", To: netip.MustParseAddr("10.0.0.100"), Sources: []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24")}}}
	waitFor(t, "the source NAT rule installed", func() bool { return reflect.DeepEqual(dp.installedRules(), want) })
	if !strings.Contains(l.log.String(), `group's traffic is source-NATed to its private address: group=az-b address=10.0.0.100 subnets=10.0.2.0/24`) {
		t.Errorf("the log does not say which traffic is source-NATed:\n%s", l.log.String())
	}

	// Past the first checks, which repair anyway: from now on only a stale table is updated.
	waitFor(t, "healthy checks", func() bool { dp.mu.Lock(); defer dp.mu.Unlock(); return dp.checks > 2*healthyChecksToRecover })
	cloud.mu.Lock()
	cloud.subnets = []string{"10.0.2.0/24", "10.0.3.0/24"}
	cloud.mu.Unlock()
	want[0].Sources = append(want[0].Sources, netip.MustParsePrefix("10.0.3.0/24"))
	waitFor(t, "the new subnet installed", func() bool { return reflect.DeepEqual(dp.installedRules(), want) })
}
