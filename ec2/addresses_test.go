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

func TestOrderAddresses(t *testing.T) {
	ip := func(a string, primary bool) types.InstancePrivateIpAddress {
		return types.InstancePrivateIpAddress{PrivateIpAddress: aws.String(a), Primary: aws.Bool(primary)}
	}
	tests := []struct {
		name    string
		ips     []types.InstancePrivateIpAddress
		primary string
		want    []string
	}{
		{"PrimaryOnly", []types.InstancePrivateIpAddress{ip("10.0.0.10", true)}, "10.0.0.10", []string{"10.0.0.10"}},
		{"SecondariesInNumericOrder", []types.InstancePrivateIpAddress{ip("10.0.0.100", false), ip("10.0.0.10", true), ip("10.0.0.9", false)},
			"10.0.0.10", []string{"10.0.0.10", "10.0.0.9", "10.0.0.100"}},
		{"PrimaryFromTheList", []types.InstancePrivateIpAddress{ip("10.0.0.20", false), ip("10.0.0.30", true)}, "", []string{"10.0.0.30", "10.0.0.20"}},
		{"None", nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := orderAddresses(tt.ips, tt.primary); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMe_HoldsEIP(t *testing.T) {
	info := instanceInfo{primaryENI: "eni-1", attached: []attachedENI{{id: "eni-1", addrs: []string{"10.0.0.10", "10.0.0.100"}}}}
	pinned := func(index int) me {
		m := me{instanceID: "i-1", primaryENI: "eni-1"}
		m.pinAddress(Group{PinAddress: true, AddressIndex: index}, info)
		return m
	}
	onPrimary := EIP{InstanceID: "i-1", ENIID: "eni-1", PrivateIP: "10.0.0.10"}
	onSecondary := EIP{InstanceID: "i-1", ENIID: "eni-1", PrivateIP: "10.0.0.100"}
	elsewhere := EIP{InstanceID: "i-2", ENIID: "eni-2", PrivateIP: "10.0.0.10"}
	tests := []struct {
		name string
		m    me
		e    EIP
		want bool
	}{
		{"NotPinnedAnyAddress", me{instanceID: "i-1"}, onSecondary, true},
		{"NotPinnedOtherInstance", me{instanceID: "i-1"}, elsewhere, false},
		{"FirstGroupOnPrimary", pinned(0), onPrimary, true},
		{"FirstGroupOnSecondaryIsDrift", pinned(0), onSecondary, false},
		{"SecondGroupOnSecondary", pinned(1), onSecondary, true},
		{"SecondGroupOnPrimaryIsDrift", pinned(1), onPrimary, false},
		{"ThirdGroupHasNoAddress", pinned(2), onPrimary, false},
		{"OtherInstance", pinned(0), elsewhere, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.holdsEIP(tt.e); got != tt.want {
				t.Errorf("holdsEIP(%+v) = %v, want %v", tt.e, got, tt.want)
			}
		})
	}
	if a := pinned(2).addr; !a.Short() || a.Want != "" || !strings.Contains(a.shortError().Error(), "interface eni-1 has 2 private addresses") {
		t.Errorf("third group: %+v, %v", a, a.shortError())
	}
	if a := pinned(1).addr; a.Short() || a.Want != "10.0.0.100" {
		t.Errorf("second group: %+v", a)
	}
}

// TestClaim_PinnedAddresses: against moto behind a proxy that associates as EC2 does (a
// second Elastic IP on a private address displaces the first), two groups claimed by one
// instance sit on its two private addresses and stay there; an Elastic IP on the wrong one
// of its addresses is drift, moved to the right one; an instance without a second address
// refuses to take the second group rather than displace the first.
func TestClaim_PinnedAddresses(t *testing.T) {
	spec := standardSpec()
	spec.Instances[0].SecondaryIPs = []string{"10.0.0.100"}
	f := newFixture(t, spec, ec2test.ProxyOptions{AssociateAsEC2: true}, Options{})
	ctx := ctxT(t)
	eip2, err := f.raw.AllocateAddress(ctx, &ec2sdk.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	ga := Group{Name: "a", ElasticIP: f.world.AllocationID, PinAddress: true, AddressIndex: 0}
	gb := Group{Name: "b", ElasticIP: aws.ToString(eip2.AllocationId), PinAddress: true, AddressIndex: 1}
	a, b := Self{InstanceID: f.inst(0)}, Self{InstanceID: f.inst(1)}

	// where reads an Elastic IP through the proxy: instance and private address.
	where := func(alloc string) string {
		t.Helper()
		out, err := f.client.api.DescribeAddresses(ctx, &ec2sdk.DescribeAddressesInput{AllocationIds: []string{alloc}})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Addresses[0].InstanceId) + " " + aws.ToString(out.Addresses[0].PrivateIpAddress)
	}
	onA, onA2 := f.inst(0)+" 10.0.0.10", f.inst(0)+" 10.0.0.100"

	if _, err := f.client.Claim(ctx, ga, a, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := f.client.Claim(ctx, gb, a, nil)
	if err != nil {
		t.Fatalf("claim b: %v", err)
	}
	if rep.EIP.Action != ActionAssociated {
		t.Fatalf("claim b: elastic ip %s", rep.EIP.Action)
	}
	if got := where(ga.ElasticIP); got != onA {
		t.Errorf("a's elastic ip on %q, want %q", got, onA)
	}
	if got := where(gb.ElasticIP); got != onA2 {
		t.Errorf("b's elastic ip on %q, want %q", got, onA2)
	}
	for _, g := range []Group{ga, gb} {
		rep, err := f.client.Claim(ctx, g, a, nil)
		if err != nil || rep.EIP.Action != ActionUnchanged {
			t.Errorf("claim %s again: %s, %v; want unchanged", g.Name, rep.EIP.Action, err)
		}
		obs, err := f.client.Observe(ctx, g, a)
		if err != nil || obs.Misplaced != "" || obs.Address.Short() {
			t.Errorf("observe %s: misplaced %q, address %+v, %v", g.Name, obs.Misplaced, obs.Address, err)
		}
	}
	if n := f.proxy.Displaced(); n != 0 {
		t.Errorf("%d elastic ips displaced, want none", n)
	}

	t.Run("WrongAddressIsDrift", func(t *testing.T) {
		// b's Elastic IP put on the primary address by hand: a's is displaced.
		if _, err := f.client.api.AssociateAddress(ctx, &ec2sdk.AssociateAddressInput{AllocationId: aws.String(gb.ElasticIP),
			InstanceId: aws.String(f.inst(0)), AllowReassociation: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
		if n := f.proxy.Displaced(); n != 1 {
			t.Fatalf("%d elastic ips displaced, want 1", n)
		}
		obs, err := f.client.Observe(ctx, gb, a)
		if err != nil || !strings.Contains(obs.Misplaced, "not on 10.0.0.100") {
			t.Fatalf("observe b: misplaced %q, %v", obs.Misplaced, err)
		}
		for _, g := range []Group{gb, ga} {
			if _, err := f.client.Claim(ctx, g, a, nil); err != nil {
				t.Fatalf("claim %s: %v", g.Name, err)
			}
		}
		if got := where(ga.ElasticIP); got != onA {
			t.Errorf("a's elastic ip on %q, want %q", got, onA)
		}
		if got := where(gb.ElasticIP); got != onA2 {
			t.Errorf("b's elastic ip on %q, want %q", got, onA2)
		}
	})

	t.Run("TooFewAddresses", func(t *testing.T) {
		obs, err := f.client.Observe(ctx, gb, b)
		if err != nil || !obs.Address.Short() || len(obs.Address.Have) != 1 {
			t.Fatalf("observe b from nat-b: address %+v, %v", obs.Address, err)
		}
		rep, err := f.client.Claim(ctx, gb, b, nil)
		if err == nil || rep.EIP.Action != ActionFailed || !strings.Contains(err.Error(), "assign it a secondary private IP") {
			t.Fatalf("claim b from nat-b: %s, %v; want a failure asking for a secondary IP", rep.EIP.Action, err)
		}
		if got := where(gb.ElasticIP); got != onA2 {
			t.Errorf("b's elastic ip on %q, want it left on %q", got, onA2)
		}
		// nat-b can hold a on its primary address.
		if _, err := f.client.Claim(ctx, ga, b, nil); err != nil {
			t.Fatal(err)
		}
		if got, want := where(ga.ElasticIP), f.inst(1)+" 10.0.0.11"; got != want {
			t.Errorf("a's elastic ip on %q, want %q", got, want)
		}
	})
}
