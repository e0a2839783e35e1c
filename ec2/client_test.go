package ec2

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

func routeActions(r Report) map[string]string {
	out := map[string]string{}
	for _, s := range r.Routes {
		out[s.RouteTableID] = s.Action
	}
	return out
}

func TestClient_Claim(t *testing.T) {
	t.Run("MovesEverythingThenIsIdempotent", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		rts := f.world.RouteTableIDs[:3]
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}

		before, err := f.client.Observe(ctx, g, Self{InstanceID: a})
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		if before.EIP.InstanceID != a {
			t.Fatalf("before: eip on %q, want %s", before.EIP.InstanceID, a)
		}

		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if rep.EIP.Action != ActionAssociated {
			t.Errorf("eip action = %q, want associated", rep.EIP.Action)
		}
		want := map[string]string{rts[0]: ActionReplaced, rts[1]: ActionReplaced, rts[2]: ActionCreated}
		if got := routeActions(rep); !mapsEqual(got, want) {
			t.Errorf("route actions = %v, want %v", got, want)
		}
		if !(rep.EIPDone <= rep.RoutesDone && rep.RoutesDone <= rep.Verified && rep.Verified > 0) {
			t.Errorf("timings out of order: eip %v routes %v verified %v", rep.EIPDone, rep.RoutesDone, rep.Verified)
		}

		// Independent checks: a fresh client, and raw calls straight to moto.
		other, err := New(ctx, Options{Region: f.world.Region, Endpoint: f.moto.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		obs, err := other.Observe(ctx, g, Self{InstanceID: a})
		if err != nil {
			t.Fatalf("observe after: %v", err)
		}
		if obs.EIP.InstanceID != b || obs.EIP.PublicIP != f.world.PublicIP {
			t.Errorf("observed eip = %+v, want on %s", obs.EIP, b)
		}
		if len(obs.Routes) != 3 {
			t.Fatalf("observed %d routes, want 3: %+v", len(obs.Routes), obs.Routes)
		}
		for _, r := range obs.Routes {
			if r.InstanceID != b || r.State != RouteActive || r.Destination != DefaultDestination {
				t.Errorf("observed route %+v, want active via %s", r, b)
			}
		}
		if in := obs.Instances[b]; in.State != "running" || in.PrivateIP != "10.0.0.11" || in.VPCID != f.world.VPCID {
			t.Errorf("observed instance b = %+v", in)
		}
		if _, ok := obs.Instances[a]; !ok {
			t.Errorf("observation lacks self %s: %v", a, obs.Instances)
		}
		if inst, _ := f.rawEIP(t); inst != b {
			t.Errorf("raw eip on %q, want %s", inst, b)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
			if target != b {
				t.Errorf("raw route in %s via %q, want %s", id, target, b)
			}
		}
		if got := f.rawRoutes(t, DefaultDestination, f.world.RouteTableIDs[3]); got[f.world.RouteTableIDs[3]] != a {
			t.Errorf("unmanaged table moved: %v", got)
		}

		f.proxy.ResetStats()
		rep, err = f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("second claim: %v", err)
		}
		if rep.EIP.Action != ActionUnchanged || rep.Changed() {
			t.Errorf("second claim changed something: %+v", rep)
		}
		for _, s := range rep.Routes {
			if s.Action != ActionUnchanged {
				t.Errorf("second claim: %s %s", s.RouteTableID, s.Action)
			}
		}
		stats := f.proxy.Stats()
		if n := ec2test.Mutations(stats); n != 0 {
			t.Errorf("second claim made %d mutating calls: %v", n, stats)
		}
		if stats["DescribeAddresses"] != 1 || stats["DescribeRouteTables"] != 1 || len(stats) != 2 {
			t.Errorf("second claim calls = %v, want one DescribeAddresses and one DescribeRouteTables", stats)
		}
	})

	t.Run("UnknownRouteTable", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: []string{rts[0], "rtb-0123456789abcdef0", rts[1]}}
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err == nil || !strings.Contains(err.Error(), "route table rtb-0123456789abcdef0 not found") {
			t.Fatalf("claim error = %v, want route table not found", err)
		}
		want := map[string]string{rts[0]: ActionReplaced, rts[1]: ActionReplaced, "rtb-0123456789abcdef0": ActionFailed}
		if got := routeActions(rep); !mapsEqual(got, want) {
			t.Errorf("route actions = %v, want %v", got, want)
		}
		if rep.EIP.Action != ActionAssociated {
			t.Errorf("eip action = %q", rep.EIP.Action)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts[0], rts[1]) {
			if target != b {
				t.Errorf("route in %s via %q, want %s", id, target, b)
			}
		}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		if !slices.Contains(obs.Problems, "route table rtb-0123456789abcdef0 not found") {
			t.Errorf("problems = %q", obs.Problems)
		}
	})

	t.Run("UnknownElasticIP", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs[:3]
		g := Group{Name: "g1", ElasticIP: "eipalloc-0123456789abcdef0", RouteTableIDs: rts}
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err == nil || !strings.Contains(err.Error(), "elastic ip eipalloc-0123456789abcdef0 not found") {
			t.Fatalf("claim error = %v, want elastic ip not found", err)
		}
		if rep.EIP.Action != ActionFailed {
			t.Errorf("eip action = %q, want failed", rep.EIP.Action)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
			if target != b {
				t.Errorf("route in %s via %q, want %s", id, target, b)
			}
		}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		if !slices.Contains(obs.Problems, "elastic ip eipalloc-0123456789abcdef0 not found") {
			t.Errorf("problems = %q", obs.Problems)
		}
	})

	t.Run("ElasticIPByPublicIP", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rep, err := f.client.Claim(ctx, Group{Name: "g1", ElasticIP: f.world.PublicIP}, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if rep.EIP.Action != ActionAssociated || len(rep.Routes) != 0 {
			t.Errorf("report = %+v", rep)
		}
		if inst, _ := f.rawEIP(t); inst != b {
			t.Errorf("eip on %q, want %s", inst, b)
		}
	})

	t.Run("DiscoverByMemberTargets", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		rts := f.world.RouteTableIDs
		// One table points at A's interface rather than the instance: still a member target.
		if _, err := f.raw.ReplaceRoute(ctx, &ec2sdk.ReplaceRouteInput{
			RouteTableId: aws.String(rts[1]), DestinationCidrBlock: aws.String(DefaultDestination),
			NetworkInterfaceId: aws.String(f.world.Instances[0].ENIID),
		}); err != nil {
			t.Fatal(err)
		}
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, DiscoverTargets: []string{a, b}}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		var got []string
		for _, r := range obs.Routes {
			got = append(got, r.RouteTableID)
			if r.InstanceID != a {
				t.Errorf("route %+v: want attributed to %s", r, a)
			}
		}
		want := []string{rts[0], rts[1], rts[3]}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("discovered %v, want %v (not %s, which has no default route)", got, want, rts[2])
		}
		if rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil); err != nil {
			t.Fatalf("claim: %v (%+v)", err, rep)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, want...) {
			if target != b {
				t.Errorf("route in %s via %q, want %s", id, target, b)
			}
		}
		// Now pointing at self, the tables are still found and left alone.
		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil || rep.Changed() || len(rep.Routes) != 3 {
			t.Errorf("second claim: %v %+v", err, rep)
		}
		if n := ec2test.Mutations(f.proxy.Stats()); n != 0 {
			t.Errorf("second claim made %d mutating calls", n)
		}
	})

	t.Run("DiscoverByTags", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs
		g := Group{Name: "g1", RouteTableTags: map[string]string{"natganker": "g1"}}
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		want := map[string]string{rts[0]: ActionReplaced, rts[1]: ActionReplaced, rts[2]: ActionCreated}
		if got := routeActions(rep); !mapsEqual(got, want) {
			t.Errorf("route actions = %v, want %v", got, want)
		}
		if rep.EIP.Action != ActionNone {
			t.Errorf("eip action = %q, want none", rep.EIP.Action)
		}
		if got := f.rawRoutes(t, DefaultDestination, rts[3]); got[rts[3]] != f.inst(0) {
			t.Errorf("untagged table moved: %v", got)
		}

		obs, err := f.client.Observe(ctx, Group{Name: "g9", RouteTableTags: map[string]string{"natganker": "nope"}}, Self{InstanceID: b})
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		if len(obs.Routes) != 0 || len(obs.Problems) != 1 || !strings.Contains(obs.Problems[0], "tag filter natganker=nope matched no route table") {
			t.Errorf("observation = %+v", obs)
		}
	})

	t.Run("TargetENI", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b, eniB := f.inst(1), f.world.Instances[1].ENIID
		rts := f.world.RouteTableIDs[:3]
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}
		self := Self{InstanceID: b, TargetENI: true}
		if _, err := f.client.Claim(ctx, g, self, nil); err != nil {
			t.Fatalf("claim: %v", err)
		}
		if _, eni := f.rawEIP(t); eni != eniB {
			t.Errorf("eip on interface %q, want %s", eni, eniB)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
			if target != eniB {
				t.Errorf("route in %s via %q, want %s", id, target, eniB)
			}
		}
		obs, err := f.client.Observe(ctx, g, self)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range obs.Routes {
			if r.ENIID != eniB || r.InstanceID != b {
				t.Errorf("observed %+v, want interface %s of %s", r, eniB, b)
			}
		}
		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, self, nil)
		if err != nil || rep.Changed() {
			t.Errorf("second claim: %v %+v", err, rep)
		}
		if n := ec2test.Mutations(f.proxy.Stats()); n != 0 {
			t.Errorf("second claim made %d mutating calls", n)
		}
	})

	t.Run("RetriesThrottling", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: f.world.RouteTableIDs[:2]}
		f.proxy.FailNext("ReplaceRoute", 2, "RequestLimitExceeded")
		f.proxy.FailNext("AssociateAddress", 1, "InternalError")
		f.proxy.FailNext("DescribeRouteTables", 1, "Unavailable")
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		stats := f.proxy.Stats()
		if stats["ReplaceRoute"] != 4 || stats["AssociateAddress"] != 2 {
			t.Errorf("calls = %v, want 4 ReplaceRoute (2 throttled) and 2 AssociateAddress", stats)
		}
		if got := f.client.Retries(); got != 4 {
			t.Errorf("retries = %d, want 4", got)
		}
		if rep.Changed() == false {
			t.Errorf("report = %+v", rep)
		}
	})

	t.Run("GivesUpAfterMaxAttempts", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{MaxAttempts: 2})
		ctx := ctxT(t)
		rts := f.world.RouteTableIDs[:2]
		g := Group{Name: "g1", RouteTableIDs: rts}
		// Three failures over two routes of two attempts each: exactly one route gives up.
		// (Throttling would not do: the pacer sends a throttled call again without spending
		// an attempt, see TestClient_ClaimPaced.)
		f.proxy.FailNext("ReplaceRoute", 3, "Unavailable")
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: f.inst(1)}, nil)
		if err == nil || !strings.Contains(err.Error(), "Unavailable") {
			t.Fatalf("claim error = %v, want Unavailable", err)
		}
		var failed, replaced int
		for _, s := range rep.Routes {
			switch s.Action {
			case ActionFailed:
				failed++
			case ActionReplaced:
				replaced++
			}
		}
		if failed != 1 || replaced != 1 {
			t.Errorf("routes = %+v, want one failed and one replaced", rep.Routes)
		}
	})

	t.Run("BlackholeReplaced", func(t *testing.T) {
		spec := standardSpec()
		spec.RouteTables[0].DefaultTo = 1 // already via B, but B's route is a blackhole
		f := newFixture(t, spec, ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs[:2]
		var once atomic.Bool
		once.Store(true)
		f.proxy.ModifyResponse(func(action string, body []byte) []byte {
			if action != "DescribeRouteTables" || !once.CompareAndSwap(true, false) {
				return body
			}
			return editRoute(t, body, rts[0], DefaultDestination, func(item string) string {
				return strings.Replace(item, "<state>active</state>", "<state>blackhole</state>", 1)
			})
		})
		g := Group{Name: "g1", RouteTableIDs: rts}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		if obs.Routes[slices.IndexFunc(obs.Routes, func(r Route) bool { return r.RouteTableID == rts[0] })].State != RouteBlackhole {
			t.Fatalf("observe did not see the blackhole: %+v", obs.Routes)
		}
		once.Store(true)
		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		want := map[string]string{rts[0]: ActionReplaced, rts[1]: ActionReplaced}
		if got := routeActions(rep); !mapsEqual(got, want) {
			t.Errorf("route actions = %v, want %v", got, want)
		}
		if n := f.proxy.Stats()["ReplaceRoute"]; n != 2 {
			t.Errorf("ReplaceRoute calls = %d, want 2", n)
		}
	})

	t.Run("RouteAppearedMeanwhile", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs[:1]
		var hide atomic.Bool
		hide.Store(true)
		f.proxy.ModifyResponse(func(action string, body []byte) []byte {
			if action != "DescribeRouteTables" || !hide.CompareAndSwap(true, false) {
				return body
			}
			return editRoute(t, body, rts[0], DefaultDestination, func(string) string { return "" })
		})
		rep, err := f.client.Claim(ctx, Group{Name: "g1", RouteTableIDs: rts}, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if got := routeActions(rep)[rts[0]]; got != ActionReplaced {
			t.Errorf("action = %q, want replaced after RouteAlreadyExists", got)
		}
		stats := f.proxy.Stats()
		if stats["CreateRoute"] != 1 || stats["ReplaceRoute"] != 1 {
			t.Errorf("calls = %v, want one CreateRoute then one ReplaceRoute", stats)
		}
		if got := f.rawRoutes(t, DefaultDestination, rts...)[rts[0]]; got != b {
			t.Errorf("route via %q, want %s", got, b)
		}
	})

	t.Run("ReadFailsActsBlind", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{MaxAttempts: 2})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs[:3]
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}
		if _, err := f.client.Observe(ctx, g, Self{InstanceID: b}); err != nil { // fills the cache
			t.Fatal(err)
		}
		f.proxy.FailNext("DescribeRouteTables", 2, "InternalError")
		f.proxy.FailNext("DescribeAddresses", 2, "InternalError")
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err == nil || rep.ReadErr == nil || rep.VerifyErr != nil {
			t.Fatalf("claim: err %v, read error %v, verify error %v; want only a read error", err, rep.ReadErr, rep.VerifyErr)
		}
		want := map[string]string{rts[0]: ActionReplaced, rts[1]: ActionReplaced, rts[2]: ActionCreated}
		if got := routeActions(rep); !mapsEqual(got, want) {
			t.Errorf("route actions = %v, want %v", got, want)
		}
		if inst, _ := f.rawEIP(t); inst != b {
			t.Errorf("eip on %q, want %s", inst, b)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
			if target != b {
				t.Errorf("route in %s via %q, want %s", id, target, b)
			}
		}
	})

	t.Run("SeveralDestinations", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs[:2]
		g := Group{Name: "g1", RouteTableIDs: rts, Destinations: []string{DefaultDestination, "192.0.2.0/24"}}
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if len(rep.Routes) != 4 {
			t.Fatalf("routes = %+v, want 4", rep.Routes)
		}
		for _, d := range g.Destinations {
			for id, target := range f.rawRoutes(t, d, rts...) {
				if target != b {
					t.Errorf("%s in %s via %q, want %s", d, id, target, b)
				}
			}
		}
	})
}

// editRoute rewrites, in a DescribeRouteTables answer, the route item for dest in table rtb.
func editRoute(t testing.TB, body []byte, rtb, dest string, fn func(item string) string) []byte {
	s := string(body)
	i := strings.Index(s, "<routeTableId>"+rtb+"</routeTableId>")
	if i < 0 {
		return body
	}
	end := i + strings.Index(s[i:], "</routeSet>")
	item := regexp.MustCompile(`<item><destinationCidrBlock>` + regexp.QuoteMeta(dest) + `</destinationCidrBlock>.*?</item>`)
	loc := item.FindStringIndex(s[i:end])
	if loc == nil {
		t.Errorf("route %s not in %s answer", dest, rtb)
		return body
	}
	return []byte(s[:i+loc[0]] + fn(s[i+loc[0]:i+loc[1]]) + s[i+loc[1]:])
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestClient_Observe(t *testing.T) {
	f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
	ctx := ctxT(t)
	a, b := f.inst(0), f.inst(1)
	rts := f.world.RouteTableIDs
	g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts[:3]}

	obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
	if err != nil {
		t.Fatal(err)
	}
	wantEIP := EIP{AllocationID: f.world.AllocationID, PublicIP: f.world.PublicIP, InstanceID: a, ENIID: f.world.Instances[0].ENIID, PrivateIP: "10.0.0.10"}
	got := obs.EIP
	got.AssociationID = ""
	if got != wantEIP {
		t.Errorf("eip = %+v, want %+v", obs.EIP, wantEIP)
	}
	want := []Route{
		{RouteTableID: rts[0], Destination: DefaultDestination, InstanceID: a, State: RouteActive, Associated: true},
		{RouteTableID: rts[1], Destination: DefaultDestination, InstanceID: a, State: RouteActive, Associated: true},
		{RouteTableID: rts[2], Destination: DefaultDestination, State: RouteMissing},
	}
	slices.SortFunc(want, func(x, y Route) int { return strings.Compare(x.RouteTableID, y.RouteTableID) })
	if !slices.Equal(obs.Routes, want) {
		t.Errorf("routes =\n%+v\nwant\n%+v", obs.Routes, want)
	}
	if len(obs.Instances) != 2 || obs.Instances[a].State != "running" || obs.Instances[b].ENIID != f.world.Instances[1].ENIID {
		t.Errorf("instances = %+v", obs.Instances)
	}
	if len(obs.Problems) != 0 {
		t.Errorf("problems = %q", obs.Problems)
	}

	t.Run("CallsPerObserve", func(t *testing.T) {
		f.proxy.ResetStats()
		if _, err := f.client.Observe(ctx, g, Self{InstanceID: b}); err != nil {
			t.Fatal(err)
		}
		stats := f.proxy.Stats()
		want := map[string]int{"DescribeAddresses": 1, "DescribeRouteTables": 1, "DescribeInstances": 1}
		if len(stats) != len(want) {
			t.Errorf("calls = %v, want %v", stats, want)
		}
		for k, v := range want {
			if stats[k] != v {
				t.Errorf("calls = %v, want %v", stats, want)
			}
		}
	})

	t.Run("OtherTarget", func(t *testing.T) {
		igw, err := f.raw.DescribeInternetGateways(ctx, &ec2sdk.DescribeInternetGatewaysInput{
			Filters: []types.Filter{{Name: aws.String("attachment.vpc-id"), Values: []string{f.world.VPCID}}},
		})
		if err != nil || len(igw.InternetGateways) != 1 {
			t.Fatalf("find igw: %v", err)
		}
		igwID := aws.ToString(igw.InternetGateways[0].InternetGatewayId)
		if _, err := f.raw.CreateRoute(ctx, &ec2sdk.CreateRouteInput{RouteTableId: aws.String(rts[2]), DestinationCidrBlock: aws.String(DefaultDestination), GatewayId: aws.String(igwID)}); err != nil {
			t.Fatal(err)
		}
		obs, err := f.client.Observe(ctx, Group{RouteTableIDs: rts[2:3]}, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		if len(obs.Routes) != 1 || obs.Routes[0].OtherTarget != igwID || obs.Routes[0].InstanceID != "" {
			t.Errorf("routes = %+v, want via %s", obs.Routes, igwID)
		}
	})

	t.Run("SelfNotFound", func(t *testing.T) {
		_, err := f.client.Observe(ctx, g, Self{InstanceID: "i-0123456789abcdef0"})
		if err == nil || !strings.Contains(err.Error(), "instance i-0123456789abcdef0 not found") {
			t.Errorf("err = %v, want instance not found", err)
		}
	})
}

func TestClient_InstanceState(t *testing.T) {
	f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
	ctx := ctxT(t)
	a, b := f.inst(0), f.inst(1)
	if _, err := f.raw.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{a}}); err != nil {
		t.Fatal(err)
	}
	got, err := f.client.InstanceState(ctx, a, b, "i-0123456789abcdef0")
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{a: "terminated", b: "running", "i-0123456789abcdef0": InstanceStateUnknown} {
		if got[id].State != want {
			t.Errorf("state of %s = %q, want %q", id, got[id].State, want)
		}
	}
}

func TestClient_DisableSourceDestCheck(t *testing.T) {
	f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
	ctx := ctxT(t)
	b := f.inst(1)
	read := func() bool {
		out, err := f.raw.DescribeInstanceAttribute(ctx, &ec2sdk.DescribeInstanceAttributeInput{InstanceId: aws.String(b), Attribute: types.InstanceAttributeNameSourceDestCheck})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToBool(out.SourceDestCheck.Value)
	}
	if !read() {
		t.Fatal("source/dest check already off")
	}
	if err := f.client.DisableSourceDestCheck(ctx, b); err != nil {
		t.Fatal(err)
	}
	if read() {
		t.Error("source/dest check still on")
	}
	f.proxy.ResetStats()
	if err := f.client.DisableSourceDestCheck(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n := f.proxy.Stats()["ModifyInstanceAttribute"]; n != 0 {
		t.Errorf("second call modified the attribute %d times", n)
	}
	err := f.client.DisableSourceDestCheck(ctx, "i-0123456789abcdef0")
	if err == nil || !strings.Contains(err.Error(), "i-0123456789abcdef0") {
		t.Errorf("unknown instance: err = %v", err)
	}
}

func TestClient_New(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	if _, err := New(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "no region") {
		t.Errorf("err = %v, want no region", err)
	}
}

func TestClient_CallTimeout(t *testing.T) {
	f := newFixture(t, standardSpec(), ec2test.ProxyOptions{Latency: 300 * time.Millisecond},
		Options{CallTimeout: 50 * time.Millisecond, MaxAttempts: 2})
	start := time.Now()
	_, err := f.client.InstanceState(ctxT(t), f.inst(0))
	if err == nil {
		t.Fatal("no error although every call takes longer than the call timeout")
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("two attempts of 50ms took %v", took)
	}
	if n := f.proxy.Stats()["DescribeInstances"]; n != 2 {
		t.Errorf("DescribeInstances calls = %d, want 2 attempts", n)
	}
}

// logBuffer collects a logger's output; the SDK logs from its own goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// warnings returns the lines logged at warn level.
func (l *logBuffer) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, "[WARN]") {
			out = append(out, line)
		}
	}
	return out
}

func TestClient_AttemptWarnings(t *testing.T) {
	newLogged := func(t *testing.T, o Options) (*fixture, *logBuffer) {
		t.Helper()
		var buf logBuffer
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: &buf})
		return newFixture(t, standardSpec(), ec2test.ProxyOptions{}, o), &buf
	}

	// EC2 accepts the call and never answers: the operator hears of it after the first
	// attempt, while the call is still being retried.
	t.Run("HungEC2", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		f, buf := newLogged(t, Options{CallTimeout: timeout, MaxAttempts: 5})
		f.proxy.Hang("DescribeInstances")
		done := make(chan error, 1)
		go func() {
			_, err := f.client.InstanceState(ctxT(t), f.inst(0))
			done <- err
		}()
		deadline := time.Now().Add(20 * time.Second)
		for len(buf.warnings()) == 0 {
			select {
			case err := <-done:
				t.Fatalf("call ended (err %v) before any warning", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("no warning 20s into a hung call")
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The call cannot end while EC2 hangs: the warning came before the last attempt.
		select {
		case err := <-done:
			t.Fatalf("call ended (err %v) while EC2 still hung", err)
		default:
		}
		f.proxy.Unhang()
		if err := <-done; err != nil {
			t.Fatalf("call after EC2 answers again: %v", err)
		}

		warns := buf.warnings()
		first := warns[0]
		for _, want := range []string{"ec2 call attempt failed; retrying", "operation=DescribeInstances", "attempt=1/5", "took=", `reason="no answer within the call timeout (300ms)"`} {
			if !strings.Contains(first, want) {
				t.Errorf("warning %q lacks %q", first, want)
			}
		}
		took := regexp.MustCompile(`took=(\S+)`).FindStringSubmatch(first)
		if d, err := time.ParseDuration(took[1]); err != nil || d < timeout {
			t.Errorf("warning says the attempt took %s, want at least the call timeout %v", took[1], timeout)
		}
		// One line per failed attempt: every attempt but the last, successful one.
		if n := f.proxy.Stats()["DescribeInstances"]; len(warns) != n-1 {
			t.Errorf("%d warnings for %d attempts, want one per failed attempt:\n%s", len(warns), n, strings.Join(warns, "\n"))
		}
	})

	for _, tc := range []struct {
		name        string
		maxAttempts int
		fail        int
		code        string
		wantErr     bool
		want        []string // attempt numbers warned about
		reason      string
		info        string // a line expected at info level
	}{
		{name: "ServerErrorsThenSuccess", maxAttempts: 3, fail: 2, code: "InternalError", want: []string{"attempt=1/3", "attempt=2/3"}, reason: "EC2 server error (HTTP 500)"},
		// Throttling is EC2 asking to slow down, expected in a large takeover: info, not warn.
		{name: "Throttled", maxAttempts: 3, fail: 1, code: "RequestLimitExceeded", info: "ec2 call throttled; retrying: operation=DescribeInstances attempt=1/3"},
		// The last failure is returned to the caller, not warned about.
		{name: "LastAttemptNotWarned", maxAttempts: 2, fail: 2, code: "Unavailable", wantErr: true, want: []string{"attempt=1/2"}, reason: "EC2 server error (HTTP 503)"},
		// An answer that retrying cannot change is no attempt failure.
		{name: "NotRetryable", maxAttempts: 3, fail: 1, code: "InvalidParameterValue", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, buf := newLogged(t, Options{MaxAttempts: tc.maxAttempts})
			f.proxy.FailNext("DescribeInstances", tc.fail, tc.code)
			_, err := f.client.InstanceState(ctxT(t), f.inst(0))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			warns := buf.warnings()
			if len(warns) != len(tc.want) {
				t.Fatalf("warnings:\n%s\nwant %d", strings.Join(warns, "\n"), len(tc.want))
			}
			if tc.info != "" && !strings.Contains(buf.String(), "[INFO]  test.ec2: "+tc.info) {
				t.Errorf("log lacks the info line %q:\n%s", tc.info, buf.String())
			}
			for i, w := range tc.want {
				if !strings.Contains(warns[i], w) || !strings.Contains(warns[i], tc.code) || !strings.Contains(warns[i], `reason="`+tc.reason+`"`) {
					t.Errorf("warning %q, want %s, %s and reason %q", warns[i], w, tc.code, tc.reason)
				}
			}
		})
	}
}
