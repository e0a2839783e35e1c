package ec2

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

// TestPacer checks the model's arithmetic on a clock that moves only when told.
func TestPacer(t *testing.T) {
	const guard = 50 * time.Millisecond
	now := time.Unix(1_000_000, 0)
	newModel := func() *pacer {
		p := newPacer(mutateBurst, mutateRate, guard)
		p.now = func() time.Time { return now }
		p.last = now
		return p
	}

	t.Run("BurstThenRefillRate", func(t *testing.T) {
		p := newModel()
		for i := range mutateBurst {
			if d := p.reserve(); d != 0 {
				t.Fatalf("call %d of the burst waits %v, want none", i+1, d)
			}
		}
		for k := 1; k <= 3; k++ {
			want := time.Duration(k)*time.Second/mutateRate + guard
			if d := p.reserve(); d != want {
				t.Errorf("call %d beyond the burst waits %v, want %v", k, d, want)
			}
		}
	})

	t.Run("RefillCappedAtBurst", func(t *testing.T) {
		p := newModel()
		p.reserve()
		now = now.Add(time.Hour)
		for i := range mutateBurst {
			if d := p.reserve(); d != 0 {
				t.Fatalf("call %d waits %v after an hour idle, want none", i+1, d)
			}
		}
		if d := p.reserve(); d == 0 {
			t.Error("the bucket held more than its burst")
		}
	})

	t.Run("ThrottledEmptiesTheBucket", func(t *testing.T) {
		p := newModel()
		p.throttled()
		if d, want := p.reserve(), time.Second/mutateRate+guard; d != want {
			t.Errorf("first call after a refusal waits %v, want %v", d, want)
		}
		// Tokens promised before the refusal stay promised: the next call queues behind.
		p.throttled()
		if d, want := p.reserve(), 2*time.Second/mutateRate+guard; d != want {
			t.Errorf("second call after a refusal waits %v, want %v", d, want)
		}
	})

	t.Run("CancelGivesTheTokenBack", func(t *testing.T) {
		p := newModel()
		for range mutateBurst {
			p.reserve()
		}
		p.reserve()
		p.cancel()
		if d, want := p.reserve(), time.Second/mutateRate+guard; d != want {
			t.Errorf("call after a cancelled reservation waits %v, want %v", d, want)
		}
	})

	t.Run("SpareOnlyFromAFullBucket", func(t *testing.T) {
		p := newModel()
		if ok, _ := p.reserveSpare(); !ok {
			t.Fatal("a dry run was refused a full bucket")
		}
		ok, d := p.reserveSpare()
		if want := time.Second/mutateRate + guard; ok || d != want {
			t.Errorf("second dry run: ok %v, wait %v; want to wait %v for the bucket to fill", ok, d, want)
		}
		// A takeover after any number of dry runs finds all but one token.
		for i := range mutateBurst - 1 {
			if d := p.reserve(); d != 0 {
				t.Fatalf("takeover call %d after a dry run waits %v, want none", i+1, d)
			}
		}
	})
}

// TestClient_ClaimPaced: a takeover larger than EC2's burst, through a proxy throttling as
// EC2 does, completes without an error or a warning, and what EC2 refused anyway (throttling
// injected on top) is sent again without spending the SDK's single attempt.
func TestClient_ClaimPaced(t *testing.T) {
	const extra = 12 // tables beyond the burst
	spec := standardSpec()
	spec.RouteTables = nil
	for i := range mutateBurst + extra {
		rt := ec2test.RouteTableSpec{Name: fmt.Sprintf("rt%d", i), DefaultTo: 0, Tags: map[string]string{"natganker": "paced"}}
		if i == mutateBurst+extra-1 {
			rt.SubnetCIDR = "10.0.1.0/24" // the clients' table
		}
		spec.RouteTables = append(spec.RouteTables, rt)
	}
	var buf logBuffer
	f := newFixture(t, spec, ec2test.ProxyOptions{Throttle: true, Latency: 20 * time.Millisecond},
		Options{MaxAttempts: 1, Logger: hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: &buf})})
	ctx := ctxT(t)
	a, b := f.inst(0), f.inst(1)
	g := Group{Name: "paced", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "paced"}}
	known, err := f.client.Observe(ctx, g, Self{InstanceID: b})
	if err != nil {
		t.Fatal(err)
	}
	// Throttling beyond the model's: EC2's bucket was drained by someone else.
	f.proxy.FailNext("AssociateAddress", 1, "RequestLimitExceeded")
	f.proxy.FailNext("ReplaceRoute", 3, "RequestLimitExceeded")

	rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, &known)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if len(rep.Routes) != mutateBurst+extra {
		t.Fatalf("claim reports %d routes, want %d", len(rep.Routes), mutateBurst+extra)
	}
	for table, target := range f.rawRoutes(t, DefaultDestination, f.world.RouteTableIDs...) {
		if target != b {
			t.Errorf("route in %s points at %q, want %s (was %s)", table, target, b, a)
		}
	}
	if eip, _ := f.rawEIP(t); eip != b {
		t.Errorf("elastic ip on %q, want %s", eip, b)
	}
	if got := f.client.Throttles(); got < 4 {
		t.Errorf("throttled attempts sent again = %d, want at least the 4 injected", got)
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") || strings.Contains(line, "throttled; retrying") {
			t.Errorf("throttling surfaced in the log: %s", line)
		}
	}
}

// TestClient_ClaimOrder: one call at a time, a takeover moves the Elastic IP first, then the
// routes of tables with associated subnets, then the others.
func TestClient_ClaimOrder(t *testing.T) {
	spec := standardSpec()
	for i := range 6 {
		spec.RouteTables = append(spec.RouteTables, ec2test.RouteTableSpec{
			Name: fmt.Sprintf("idle%d", i), DefaultTo: 0, Tags: map[string]string{"natganker": "g1"}})
	}
	f := newFixture(t, spec, ec2test.ProxyOptions{}, Options{MaxConcurrency: 1})
	ctx := ctxT(t)
	b := f.inst(1)
	g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "g1"}}
	known, err := f.client.Observe(ctx, g, Self{InstanceID: b})
	if err != nil {
		t.Fatal(err)
	}
	associated := map[string]bool{f.world.RouteTableIDs[0]: true, f.world.RouteTableIDs[1]: true}
	for _, r := range known.Routes {
		if r.Associated != associated[r.RouteTableID] {
			t.Errorf("route %+v: Associated %v, want %v", r, r.Associated, associated[r.RouteTableID])
		}
	}
	rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, &known)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	var lastBusy, firstIdle time.Duration = 0, time.Hour
	for _, s := range rep.Routes {
		if s.Done <= rep.EIPDone {
			t.Errorf("route %s done at %v, before the elastic ip (%v)", s.RouteTableID, s.Done, rep.EIPDone)
		}
		if associated[s.RouteTableID] {
			lastBusy = max(lastBusy, s.Done)
		} else {
			firstIdle = min(firstIdle, s.Done)
		}
	}
	if lastBusy >= firstIdle {
		t.Errorf("a table without subnets moved (%v) before one with subnets (%v): %+v", firstIdle, lastBusy, rep.Routes)
	}
}
