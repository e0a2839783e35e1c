package ec2

import (
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

// secondRound returns the tables whose route steps were made in the second round.
func secondRoundTables(r Report) []string {
	var out []string
	for _, s := range r.Routes {
		if s.SecondRound {
			out = append(out, s.RouteTableID)
		}
	}
	return out
}

func TestClient_ClaimKnown(t *testing.T) {
	t.Run("ActsOnEverythingWithoutReading", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		rts := f.world.RouteTableIDs[:3]
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}

		// What a peer read a while ago: EIP and two routes on a, the third table without a route.
		known, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		// Since then someone deleted the route in the first table by hand.
		if _, err := f.raw.DeleteRoute(ctx, &ec2sdk.DeleteRouteInput{RouteTableId: aws.String(rts[0]), DestinationCidrBlock: aws.String(DefaultDestination)}); err != nil {
			t.Fatal(err)
		}

		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, &known)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if rep.EIP.Action != ActionAssociated || rep.EIP.SecondRound {
			t.Errorf("eip step = %+v, want associated in the first round", rep.EIP)
		}
		want := map[string]string{rts[0]: ActionCreated, rts[1]: ActionReplaced, rts[2]: ActionCreated}
		if got := routeActions(rep); !mapsEqual(got, want) {
			t.Errorf("route actions = %v, want %v", got, want)
		}
		if got := secondRoundTables(rep); len(got) != 0 {
			t.Errorf("second round for %v, want none", got)
		}
		// Nothing was read before acting: the only describes are the verification's.
		stats := f.proxy.Stats()
		if stats["DescribeAddresses"] != 1 || stats["DescribeRouteTables"] != 1 {
			t.Errorf("describe calls = %v, want only one read-back of each", stats)
		}
		after, err := f.client.Observe(ctx, g, Self{InstanceID: a})
		if err != nil {
			t.Fatal(err)
		}
		if after.EIP.InstanceID != b {
			t.Errorf("eip on %q after claim, want %s", after.EIP.InstanceID, b)
		}
		for _, r := range after.Routes {
			if r.InstanceID != b || r.State != RouteActive {
				t.Errorf("route %s %s → %q (%s), want %s", r.RouteTableID, r.Destination, r.InstanceID, r.State, b)
			}
		}

		// Claiming again with known acts on everything again, harmlessly; claiming without
		// known reads first and calls nothing.
		f.proxy.ResetStats()
		rep, err = f.client.Claim(ctx, g, Self{InstanceID: b}, &after)
		if err != nil {
			t.Fatalf("second claim with known: %v", err)
		}
		if stats := f.proxy.Stats(); stats["AssociateAddress"] != 1 || stats["ReplaceRoute"] != 3 || ec2test.Mutations(stats) != 4 {
			t.Errorf("second claim with known: calls = %v, want the Elastic IP and 3 routes moved again", stats)
		}
		f.proxy.ResetStats()
		rep, err = f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil || rep.Changed() {
			t.Fatalf("claim without known: changed=%v err=%v", rep.Changed(), err)
		}
		if n := ec2test.Mutations(f.proxy.Stats()); n != 0 {
			t.Errorf("claim without known made %d mutating calls", n)
		}
	})

	// The dead owner A repaired a route after the read B acts on: that read shows the route
	// pointing at B already. A single claim must still move it.
	t.Run("StaleRead", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		rts := []string{f.world.RouteTableIDs[0], f.world.RouteTableIDs[1], f.world.RouteTableIDs[3]}
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}
		f.pointRoute(t, rts[0], b)
		known, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range known.Routes {
			if want := map[bool]string{true: b, false: a}[r.RouteTableID == rts[0]]; r.InstanceID != want {
				t.Fatalf("observed %s via %q, want %s", r.RouteTableID, r.InstanceID, want)
			}
		}
		f.pointRoute(t, rts[0], a) // A repairs table 1, then dies

		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, &known)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
			if target != b {
				t.Errorf("route in %s via %q after the claim, want %s", id, target, b)
			}
		}
		if inst, _ := f.rawEIP(t); inst != b {
			t.Errorf("eip on %q, want %s", inst, b)
		}
		// Complete on the first attempt: every route moved once, none needed the second round.
		if got := secondRoundTables(rep); len(got) != 0 {
			t.Errorf("second round for %v, want none", got)
		}
		if n := f.proxy.Stats()["ReplaceRoute"]; n != len(rts) {
			t.Errorf("ReplaceRoute calls = %d, want %d", n, len(rts))
		}
	})

	t.Run("TableAppearedSinceKnown", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "g1"}}
		known, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		if len(known.Routes) != 3 {
			t.Fatalf("known routes = %+v, want the 3 tagged tables", known.Routes)
		}
		// The fourth table, routing via A, is tagged for the group after the read.
		if _, err := f.raw.CreateTags(ctx, &ec2sdk.CreateTagsInput{Resources: []string{rts[3]},
			Tags: []types.Tag{{Key: aws.String("natganker"), Value: aws.String("g1")}}}); err != nil {
			t.Fatal(err)
		}

		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, &known)
		if err != nil {
			t.Fatalf("claim: %v (the second round should have fixed everything)", err)
		}
		if got := secondRoundTables(rep); len(got) != 1 || got[0] != rts[3] {
			t.Errorf("second round for %v, want only %s", got, rts[3])
		}
		if got := routeActions(rep)[rts[3]]; got != ActionReplaced {
			t.Errorf("action on the new table = %q, want replaced", got)
		}
		if len(rep.Routes) != 4 {
			t.Errorf("report routes = %+v, want 4", rep.Routes)
		}
		for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
			if target != b {
				t.Errorf("route in %s via %q, want %s", id, target, b)
			}
		}
	})

	// The first read-back still shows the address on A, as EC2 may right after a change: it
	// is read again, not moved again.
	t.Run("ElasticIPReadAgain", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.world.Instances[0], f.world.Instances[1]
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: f.world.RouteTableIDs[:1]}
		known, err := f.client.Observe(ctx, g, Self{InstanceID: b.ID})
		if err != nil {
			t.Fatal(err)
		}
		var once atomic.Bool
		once.Store(true)
		f.proxy.ModifyResponse(func(action string, body []byte) []byte {
			if action != "DescribeAddresses" || !once.CompareAndSwap(true, false) {
				return body
			}
			s := strings.ReplaceAll(string(body), b.ID, a.ID)
			return []byte(strings.ReplaceAll(s, b.ENIID, a.ENIID))
		})
		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b.ID}, &known)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if rep.EIP.Action != ActionAssociated || rep.EIP.SecondRound {
			t.Errorf("eip step = %+v, want associated in the first round only", rep.EIP)
		}
		stats := f.proxy.Stats()
		if stats["AssociateAddress"] != 1 || stats["DescribeAddresses"] != 2 || rep.Rereads != 1 {
			t.Errorf("calls = %v, rereads = %d; want one AssociateAddress, read back twice after one wait", stats, rep.Rereads)
		}
	})

	// A moves the address back right after B's AssociateAddress: B reads it back on A until
	// the verification budget is spent, then moves it again.
	t.Run("ElasticIPSecondRound", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{VerifyWait: 300 * time.Millisecond})
		ctx := ctxT(t)
		a, b := f.world.Instances[0], f.world.Instances[1]
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: f.world.RouteTableIDs[:1]}
		known, err := f.client.Observe(ctx, g, Self{InstanceID: b.ID})
		if err != nil {
			t.Fatal(err)
		}
		moveBack := make(chan error, 1)
		f.proxy.OnCall("AssociateAddress", func(n int) {
			if n == 1 {
				_, err := f.raw.AssociateAddress(ctx, &ec2sdk.AssociateAddressInput{AllocationId: aws.String(f.world.AllocationID),
					InstanceId: aws.String(a.ID), AllowReassociation: aws.Bool(true)})
				moveBack <- err
			}
		})
		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b.ID}, &known)
		select {
		case err := <-moveBack:
			if err != nil {
				t.Fatalf("move back: %v", err)
			}
		default:
			t.Fatal("the hook did not run")
		}
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if rep.EIP.Action != ActionAssociated || !rep.EIP.SecondRound {
			t.Errorf("eip step = %+v, want associated in the second round", rep.EIP)
		}
		if got := secondRoundTables(rep); len(got) != 0 {
			t.Errorf("second round for routes %v, want none", got)
		}
		if n := f.proxy.Stats()["AssociateAddress"]; n != 2 {
			t.Errorf("AssociateAddress calls = %d, want 2", n)
		}
		if inst, _ := f.rawEIP(t); inst != b.ID {
			t.Errorf("eip on %q, want %s", inst, b.ID)
		}
	})
}

func TestClient_ClaimSecondRound(t *testing.T) {
	// A route EC2 keeps reporting as a blackhole: replaced, read back wrong until the
	// verification budget is spent, replaced again, still wrong. Only then is it an error.
	f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{VerifyWait: time.Second})
	ctx := ctxT(t)
	b := f.inst(1)
	rts := f.world.RouteTableIDs[:2]
	f.proxy.ModifyResponse(func(action string, body []byte) []byte {
		if action != "DescribeRouteTables" {
			return body
		}
		return editRoute(t, body, rts[0], DefaultDestination, func(item string) string {
			return strings.Replace(item, "<state>active</state>", "<state>blackhole</state>", 1)
		})
	})
	rep, err := f.client.Claim(ctx, Group{Name: "g1", RouteTableIDs: rts}, Self{InstanceID: b}, nil)
	if err == nil || rep.VerifyErr == nil {
		t.Fatalf("claim: err %v, verify error %v; want the blackhole reported", err, rep.VerifyErr)
	}
	want := "verify: route 0.0.0.0/0 in " + rts[0] + " points at " + b + " (blackhole)"
	if !strings.Contains(rep.VerifyErr.Error(), want) || strings.Contains(rep.VerifyErr.Error(), rts[1]) {
		t.Errorf("verify error = %v, want only %q", rep.VerifyErr, want)
	}
	if got := secondRoundTables(rep); len(got) != 1 || got[0] != rts[0] {
		t.Errorf("second round for %v, want %s", got, rts[0])
	}
	if n := f.proxy.Stats()["ReplaceRoute"]; n != 3 {
		t.Errorf("ReplaceRoute calls = %d, want 3 (both routes, then the blackhole again)", n)
	}
	// The read, the read-back and one more after each wait, then one after the second round.
	// Waits of 100, 200, 400 ms and the rest of the 1s budget: at most 4.
	if n := f.proxy.Stats()["DescribeRouteTables"]; rep.Rereads < 1 || rep.Rereads > 4 || n != rep.Rereads+3 {
		t.Errorf("DescribeRouteTables calls = %d after %d waits, want 3 more than the waits, 1 to 4 of them", n, rep.Rereads)
	}
}

// Under EC2's eventual consistency (the proxy answers every read-back with the state before
// the claim for 1 s), a claim reads back until EC2 shows its change and moves nothing twice.
func TestClient_ClaimStaleReads(t *testing.T) {
	const window = time.Second
	for _, tc := range []struct {
		name  string
		known bool
	}{
		{"Takeover", true},
		{"Repair", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			logger := hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: io.MultiWriter(&logs, testWriter{t})})
			f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{Logger: logger})
			ctx := ctxT(t)
			b := f.inst(1)
			rts := f.world.RouteTableIDs[:3]
			g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}
			f.proxy.StaleReads(window)
			var known *Observation
			if tc.known {
				obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
				if err != nil {
					t.Fatal(err)
				}
				known = &obs
			}
			f.proxy.ResetStats()
			rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, known)
			if err != nil {
				t.Fatalf("claim: %v", err)
			}
			if f.proxy.Faults()[ec2test.FaultStale] == 0 || rep.Rereads == 0 {
				t.Fatalf("no stale read-back (faults %v, rereads %d): the test proves nothing", f.proxy.Faults(), rep.Rereads)
			}
			stats := f.proxy.Stats()
			// The first round alone: the Elastic IP and three routes, one of them created.
			if stats["AssociateAddress"] != 1 || stats["ReplaceRoute"] != 2 || stats["CreateRoute"] != 1 || ec2test.Mutations(stats) != 4 {
				t.Errorf("calls = %v, want only the first round's 4 mutating calls", stats)
			}
			if rep.EIP.SecondRound || len(secondRoundTables(rep)) != 0 {
				t.Errorf("second round: eip %+v, routes %v", rep.EIP, secondRoundTables(rep))
			}
			if inst, _ := f.rawEIP(t); inst != b {
				t.Errorf("eip on %q, want %s", inst, b)
			}
			for id, target := range f.rawRoutes(t, DefaultDestination, rts...) {
				if target != b {
					t.Errorf("route in %s via %q, want %s", id, target, b)
				}
			}
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") || strings.Contains(line, "moving again") {
					t.Errorf("logged for a stale read: %s", line)
				}
			}
		})
	}

	// Observe right after a change may show the state before it; that is EC2's contract,
	// not an error.
	t.Run("ObserveSeesOldState", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: f.world.RouteTableIDs[:1]}
		f.proxy.StaleReads(time.Hour)
		if _, err := f.client.Observe(ctx, g, Self{InstanceID: b}); err != nil {
			t.Fatal(err)
		}
		// Another client moves the address through the same endpoint.
		other := ec2test.API(f.client.opts.Endpoint, f.world.Region)
		if _, err := other.AssociateAddress(ctx, &ec2sdk.AssociateAddressInput{AllocationId: aws.String(f.world.AllocationID),
			InstanceId: aws.String(b), AllowReassociation: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		if obs.EIP.InstanceID != a {
			t.Errorf("eip observed on %q right after the move, want the old %s", obs.EIP.InstanceID, a)
		}
		f.proxy.StaleReads(0)
		if obs, err = f.client.Observe(ctx, g, Self{InstanceID: b}); err != nil || obs.EIP.InstanceID != b {
			t.Errorf("eip observed on %q (%v) once consistent, want %s", obs.EIP.InstanceID, err, b)
		}
	})
}
