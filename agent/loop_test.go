package agent

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/gossip"
)

// The loop tests run the real agent loop on an in-memory EC2 and gossip: decision sequences,
// timings and retries, each in well under a second on an idle machine. The moto cluster
// tests (cluster_test.go) stay the proof against the real EC2 API and memberlist.

// noLeak checks, when the test ends, that the agent left no goroutine behind.
func noLeak(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// TestLoop_OwnerDiesConfirmedThenClaimed: the owner goes silent, gossip declares it dead, the
// burst confirms, and one claim moves everything. The takeover reports the real detection
// time (the owner's silence) and the real confirmation time (defect 6: both were 0).
func TestLoop_OwnerDiesConfirmedThenClaimed(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2")
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	if n := len(cloud.claimLog()); n != 0 {
		t.Fatalf("claimed from a live healthy owner: %s", describe(cloud.claimLog()))
	}

	silentSince := time.Now().Add(-900 * time.Millisecond)
	l.gossip.set(func(g *fakeGossip) {
		g.contact["i-a"] = silentSince
		g.silent["i-a"] = true
		g.probes["i-a"] = gossip.Probe{Took: 250 * time.Millisecond}
	})
	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	waitFor(t, "nat b to own everything", func() bool { return cloud.allOn("i-b") })
	waitFor(t, "the takeover report", func() bool { return l.status(t).LastTakeover != nil })
	lt := l.status(t).LastTakeover
	if lt.From != "i-a" || lt.To != "i-b" || !strings.Contains(lt.Reason, "confirmed by direct probes") || lt.Error != "" {
		t.Fatalf("takeover = %+v", lt)
	}
	if lt.Detected < 900*time.Millisecond {
		t.Errorf("detected = %v, want at least the 900ms the owner was silent", lt.Detected)
	}
	if lt.Confirmed != 250*time.Millisecond {
		t.Errorf("confirmed = %v, want the burst's 250ms", lt.Confirmed)
	}
	if !l.logged("detected_ms=9") && !l.logged("detected_ms=1") {
		t.Errorf("takeover log line lacks the real detection time:\n%s", l.log.String())
	}
	if cs := cloud.claimLog(); len(cs) != 1 || !cs[0].known {
		t.Errorf("claims = %s, want one, acting on the last read", describe(cs))
	}
}

// TestLoop_StaleReadClaimCompleteAtOnce (defect 2): the backup's last read shows a route on
// the backup itself; the owner then repairs that route to itself and dies. The takeover must
// move that route in its first claim, not leave it on the dead owner until a retry.
func TestLoop_StaleReadClaimCompleteAtOnce(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2", "rtb-3")
	cloud.set(func(f *fakeCloud) { f.routes["rtb-2"] = "i-b" })
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })

	// The owner repairs rtb-2 (the backup does not read again: reconcile is an hour away),
	// then dies.
	cloud.set(func(f *fakeCloud) { f.routes["rtb-2"] = "i-a" })
	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	waitFor(t, "the takeover", func() bool { return len(cloud.claimLog()) > 0 })
	cs := cloud.claimLog()
	if !cs[0].known || len(cs[0].moved) != 3 {
		t.Fatalf("first claim = %s; want it to move all three tables, rtb-2 included", describe(cs))
	}
	if !cloud.allOn("i-b") {
		eip, routes := cloud.owners()
		t.Fatalf("after the first claim: EIP on %s, routes %v", eip, routes)
	}
}

// TestLoop_OtherKeyOwnerNotTaken (defect 1): a node started with the wrong gossip key sees
// no member; the owner EC2 reports is running, does not answer encrypted probes, but its
// gossip port is open. That node must not take the group, and must say why.
func TestLoop_OtherKeyOwnerNotTaken(t *testing.T) {
	for _, tt := range []struct {
		name  string
		probe gossip.Probe
		take  bool
	}{
		{"PortOpenOtherKey", gossip.Probe{Reachable: true}, false},
		// The control: the same node takes over an owner that is really gone.
		{"NothingAnswers", gossip.Probe{}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			noLeak(t)
			cloud := newFakeCloud("i-a", "rtb-1")
			l := startLoop(t, "i-c", loopConfig(300, time.Hour), cloud, nil)
			l.gossip.set(func(g *fakeGossip) {
				g.probes["i-a"] = tt.probe
				g.unreadable = []gossip.Unreadable{{Addr: "127.0.0.11", Last: time.Now()}}
			})
			waitFor(t, "a burst at the owner", func() bool { return l.gossip.confirmCount("i-a") > 0 })
			if tt.take {
				waitFor(t, "the takeover", func() bool { return cloud.allOn("i-c") })
				return
			}
			waitFor(t, "the verdict", func() bool { return l.logged("runs with another gossip key") })
			if !l.logged("runs with a different gossip key") {
				t.Errorf("no loud line about the key:\n%s", l.log.String())
			}
			ms, err := l.Members(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 2 || ms[1].State != StateOtherKey || ms[1].Address != "127.0.0.11" {
				t.Errorf("members = %+v, want this node and an other-key entry", ms)
			}
			if cs := cloud.claimLog(); len(cs) != 0 {
				t.Fatalf("took the group from a running owner with another key: %s", describe(cs))
			}
		})
	}
}

// TestLoop_SplitRepairedAtOnce (defect 3): the EIP moved by hand to the backup, the routes
// still on the primary. The primary repairs toward itself at once, not after failback_delay
// (an hour here).
func TestLoop_SplitRepairedAtOnce(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2")
	cloud.set(func(f *fakeCloud) { f.eip = "i-b" })
	l := startLoop(t, "i-a", loopConfig(200, time.Hour), cloud, nil)
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	start := time.Now()
	waitFor(t, "the split repaired", func() bool { return cloud.allOn("i-a") })
	t.Logf("split repaired %v after start", time.Since(start).Round(time.Millisecond))
	if !l.logged("split: elastic IP on i-b, routes on i-a") {
		t.Errorf("no split reason in the log:\n%s", l.log.String())
	}

	// And the backup, seeing the same split from its side, does not fight it.
	cloud2 := newFakeCloud("i-a", "rtb-1")
	cloud2.set(func(f *fakeCloud) { f.eip = "i-b" })
	b := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud2, nil)
	b.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the backup's read", func() bool { return b.status(t).EC2Owner == "i-b" })
	if b.claimsStarted(t) != 0 || len(cloud2.claimLog()) != 0 {
		t.Fatalf("the backup fought the primary's routes: %s", describe(cloud2.claimLog()))
	}
}

// TestLoop_ForcedTakeover: the operator's takeover goes through Decide: done when healthy,
// refused with the reason when not.
func TestLoop_ForcedTakeover(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	h := &fakeHealth{health: datapath.Health{Healthy: true}}
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, h)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	if _, err := l.Takeover(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if !cloud.allOn("i-b") {
		t.Fatal("takeover returned before EC2 agreed")
	}

	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-a", "i-a" })
	h.mu.Lock()
	h.health = datapath.Health{Reason: "interface pub0 is down"}
	h.mu.Unlock()
	waitFor(t, "the node to see itself unhealthy", func() bool {
		ms, _ := l.Members(context.Background())
		return len(ms) > 0 && !ms[0].Healthy
	})
	_, err := l.Takeover(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "unhealthy (interface pub0 is down)") {
		t.Fatalf("takeover on an unhealthy node: %v", err)
	}
}

// TestLoop_QuietOwnerProbedEarly: an owner memberlist still counts alive but that has been
// silent for several probe intervals is probed at once; it answers, nothing moves.
func TestLoop_QuietOwnerProbedEarly(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.set(func(g *fakeGossip) {
		g.contact["i-a"] = time.Now().Add(-time.Second)
		g.probes["i-a"] = gossip.Probe{Answered: true}
		g.silent["i-a"] = true
	})
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	l.gossip.set(func(g *fakeGossip) { g.contact["i-a"] = time.Now().Add(-time.Second) })
	waitFor(t, "an early burst", func() bool { return l.gossip.confirmCount("i-a") > 0 })
	waitFor(t, "a second burst", func() bool { return l.gossip.confirmCount("i-a") > 1 })
	if cs := cloud.claimLog(); len(cs) != 0 {
		t.Fatalf("claimed from a quiet but alive owner: %s", describe(cs))
	}
}

// TestLoop_ClaimRetriedAfterFailure: a failed claim is retried with backoff, and the report
// carries the error meanwhile.
func TestLoop_ClaimRetriedAfterFailure(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("", "rtb-1")
	cloud.set(func(f *fakeCloud) { f.claimErr = errInjected })
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	waitFor(t, "the retry to succeed", func() bool { return cloud.allOn("i-b") })
	if cs := cloud.claimLog(); len(cs) != 2 {
		t.Fatalf("claims = %s, want a failure then a success", describe(cs))
	}
	if !l.logged("takeover failed; will retry") {
		t.Errorf("the failure was not logged:\n%s", l.log.String())
	}
}

// TestLoop_HandoverOnClose: Close announces the shutdown, waits until EC2 shows the peer
// holding the group, then returns; the handover is a state of the loop.
func TestLoop_HandoverOnClose(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-a", loopConfig(200, time.Hour), cloud, nil)
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	waitFor(t, "the shutdown announcement", func() bool {
		var ok bool
		l.gossip.set(func(g *fakeGossip) { ok = len(g.published) > 0 && g.published[0].Leaving })
		return ok
	})
	select {
	case <-done:
		t.Fatal("Close returned before a peer took over")
	default:
	}
	// The peer takes over, as it would on seeing the announcement.
	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !l.logged("handover complete") {
		t.Errorf("no handover line:\n%s", l.log.String())
	}
}

// TestLoop_BurstCounts checks the one rule for when a confirmation counts.
func TestLoop_BurstCounts(t *testing.T) {
	now := time.Now()
	g := newFakeGossip()
	a := &Agent{gossip: g, members: map[string]gossip.Member{"i-m": {Name: "i-m"}, "i-l": {Name: "i-l", State: gossip.StateAlive}},
		confirms: map[string]*confirmState{}}
	g.contact["i-m"] = now.Add(-time.Second)
	g.contact["i-l"] = now.Add(-3 * time.Second)
	for _, tt := range []struct {
		name  string
		peer  string
		c     confirmState
		count bool
	}{
		{"MemberAfterLastContact", "i-m", confirmState{started: now.Add(-500 * time.Millisecond), done: now.Add(-200 * time.Millisecond)}, true},
		{"MemberBeforeLastContact", "i-m", confirmState{started: now.Add(-2 * time.Second), done: now.Add(-1500 * time.Millisecond)}, false},
		{"Running", "i-m", confirmState{running: true, launched: now}, false},
		{"RunningAfterOneThatCounts", "i-m", confirmState{running: true, launched: now, started: now.Add(-500 * time.Millisecond), done: now.Add(-200 * time.Millisecond)}, true},
		{"NonMemberRecent", "i-x", confirmState{started: now.Add(-time.Second), done: now.Add(-time.Second)}, true},
		{"NonMemberOld", "i-x", confirmState{started: now.Add(-20 * time.Second), done: now.Add(-20 * time.Second)}, false},
		// i-l is alive to memberlist: a burst that found it silent counts for a second only.
		{"AliveMemberSilentFresh", "i-l", confirmState{started: now.Add(-1200 * time.Millisecond), done: now.Add(-900 * time.Millisecond)}, true},
		{"AliveMemberSilentOld", "i-l", confirmState{started: now.Add(-2 * time.Second), done: now.Add(-1500 * time.Millisecond)}, false},
		{"AliveMemberAnsweredOld", "i-l", confirmState{started: now.Add(-2 * time.Second), done: now.Add(-1500 * time.Millisecond), probe: gossip.Probe{Answered: true}}, true},
		{"AnswerExpires", "i-x", confirmState{started: now.Add(-11 * time.Second), done: now.Add(-11 * time.Second), probe: gossip.Probe{Reachable: true}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			a.confirms = map[string]*confirmState{tt.peer: &c}
			if got := a.burst(tt.peer, now) != nil; got != tt.count {
				t.Fatalf("counts = %v, want %v", got, tt.count)
			}
		})
	}
}

// TestLoop_EC2OutageThenTakeover: EC2 cannot be read or written while the owner dies. The
// backup keeps trying, reads EC2 again every second rather than every reconcile_interval, and
// takes over as soon as EC2 is back, not after a long backoff.
func TestLoop_EC2OutageThenTakeover(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	cloud.set(func(f *fakeCloud) { f.down = errInjected })
	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	// Several failed claims: the backoff grows, and is capped.
	waitFor(t, "three failed claims", func() bool { return len(cloud.claimLog()) >= 3 })
	reads := func() int { var n int; cloud.set(func(f *fakeCloud) { n = f.reads }); return n }
	before := reads()
	waitFor(t, "a read while EC2 is down", func() bool { return reads() > before })
	cloud.set(func(f *fakeCloud) { f.down = nil })
	waitFor(t, "the takeover once EC2 is back", func() bool { return cloud.allOn("i-b") })
	if !l.logged("EC2 readable again") {
		t.Errorf("no line saying EC2 came back:\n%s", l.log.String())
	}
	if l.logged("retry_in=8s") || l.logged("retry_in=16s") {
		t.Errorf("claim backoff beyond the 4 s cap:\n%s", l.log.String())
	}
}

// TestLoop_StoppedInEC2: an owner EC2 reports stopped is taken over although its agent still
// gossips; and a node that sees its own instance stopped gives up its groups.
func TestLoop_StoppedInEC2(t *testing.T) {
	t.Run("Owner", func(t *testing.T) {
		noLeak(t)
		cloud := newFakeCloud("i-a", "rtb-1")
		cloud.set(func(f *fakeCloud) { f.states["i-a"] = "stopped" })
		l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
		l.gossip.peer("i-a", gossip.StateAlive, 200, true)
		waitFor(t, "the takeover", func() bool { return cloud.allOn("i-b") })
		// Which rule fires depends on whether the first read or the peer's join comes first:
		// a stopped owner never seen, or a member EC2 reports stopped (TestDecide covers each).
		if !l.logged("owner i-a is unhealthy: EC2 reports it stopped") && !l.logged("owner i-a is not running") {
			t.Errorf("reason not logged:\n%s", l.log.String())
		}
	})
	t.Run("Self", func(t *testing.T) {
		noLeak(t)
		cloud := newFakeCloud("i-a", "rtb-1")
		cloud.set(func(f *fakeCloud) { f.states["i-a"] = "stopping" })
		l := startLoop(t, "i-a", loopConfig(200, time.Hour), cloud, nil)
		waitFor(t, "the node to see itself stopping", func() bool {
			ms, _ := l.Members(context.Background())
			return len(ms) > 0 && !ms[0].Healthy && ms[0].Reason == "EC2 reports this instance stopping"
		})
		var meta gossip.Meta
		waitFor(t, "the peers to be told", func() bool {
			l.gossip.set(func(g *fakeGossip) { meta = g.meta })
			return !meta.Healthy
		})
	})
}

// TestLoop_StaleReadsAfterClaim: for a while after this node's takeover, EC2's reads still
// show the state from before it (eventual consistency). The agent reads again instead of
// claiming again, and logs no error.
func TestLoop_StaleReadsAfterClaim(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2")
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	cloud.set(func(f *fakeCloud) { f.staleReads = 3 })
	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	waitFor(t, "the takeover", func() bool { return cloud.allOn("i-b") })
	// The claim's own read-back comes first; then three stale reads, each read again.
	waitFor(t, "the stale reads to be spent", func() bool {
		var n int
		cloud.set(func(f *fakeCloud) { n = f.stale })
		return n == 0 && l.status(t).EC2Owner == "i-b"
	})
	waitFor(t, "a fresh read", func() bool { return l.logged("reading again") })
	if cs := cloud.claimLog(); len(cs) != 1 {
		t.Fatalf("claims = %s, want the one takeover", describe(cs))
	}
	if strings.Contains(l.log.String(), "[ERROR]") {
		t.Errorf("an error was logged:\n%s", l.log.String())
	}
}

// TestLoop_ReplayedLeaving: a shutdown announcement is believed only while it is recent. A
// captured one replayed after the cluster restarted (memberlist takes it then) moves nothing;
// a fresh one is a handover.
func TestLoop_ReplayedLeaving(t *testing.T) {
	for _, tt := range []struct {
		name  string
		since time.Duration
		take  bool
	}{
		{"Replayed", -10 * time.Minute, false},
		{"Fresh", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			noLeak(t)
			cloud := newFakeCloud("i-a", "rtb-1")
			l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
			l.gossip.peer("i-a", gossip.StateAlive, 200, true)
			waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
			l.gossip.peerMeta("i-a", gossip.StateAlive, gossip.Meta{Healthy: true, Leaving: true, LeavingSince: time.Now().Add(tt.since),
				Groups: map[string]gossip.GroupMeta{"egress": {Priority: 200, Owns: true}}})
			if tt.take {
				waitFor(t, "the handover", func() bool { return cloud.allOn("i-b") })
				return
			}
			waitFor(t, "the announcement to be seen", func() bool {
				var seen bool
				l.do(context.Background(), func() { seen = l.members["i-a"].Meta.Leaving })
				return seen
			})
			if n := l.claimsStarted(t); n != 0 {
				t.Fatalf("a replayed shutdown announcement started %d claims", n)
			}
		})
	}
}

// TestLoop_LeaverClockStepped: the owner's clock stepped two hours ahead, so its shutdown
// announcement is not believed. The handover becomes a death: nothing moves while the owner
// runs, and once it is gone and its death confirmed the node takes over. Slower, never wrong.
func TestLoop_LeaverClockStepped(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	meta := gossip.Meta{Healthy: true, Leaving: true, LeavingSince: time.Now().Add(2 * time.Hour),
		Groups: map[string]gossip.GroupMeta{"egress": {Priority: 200, Owns: true}}}
	l.gossip.set(func(g *fakeGossip) { g.probes["i-a"] = gossip.Probe{Answered: true, Reachable: true} })
	l.gossip.peerMeta("i-a", gossip.StateAlive, meta)
	waitFor(t, "the announcement to be seen", func() bool {
		var seen bool
		l.do(context.Background(), func() { seen = l.members["i-a"].Meta.Leaving })
		return seen
	})
	if n := l.claimsStarted(t); n != 0 {
		t.Fatalf("an announcement from a stepped clock started %d claims while the owner runs", n)
	}
	l.gossip.set(func(g *fakeGossip) { delete(g.probes, "i-a") })
	l.gossip.peerMeta("i-a", gossip.StateLeft, meta)
	waitFor(t, "the takeover once the owner is gone", func() bool { return cloud.allOn("i-b") })
}

// TestLoop_OtherKeyOwnerOnLossyLink: an owner running with another key answers only by
// accepting TCP connections, and a lossy link loses a whole burst's worth now and then. One
// burst that found nothing is not enough to take a running instance that is not a member.
func TestLoop_OtherKeyOwnerOnLossyLink(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-c", loopConfig(300, time.Hour), cloud, nil)
	l.gossip.set(func(g *fakeGossip) {
		g.sequence["i-a"] = []gossip.Probe{{}, {Reachable: true}}
		g.probes["i-a"] = gossip.Probe{Reachable: true}
	})
	waitFor(t, "the verdict", func() bool { return l.logged("runs with another gossip key") })
	if n := l.claimsStarted(t); n != 0 {
		t.Fatalf("one lost burst made the node take a running owner: %s", describe(cloud.claimLog()))
	}
}

// TestLoop_ClaimAbandonedWhenUnhealthy: a claim in progress (a failback held up by EC2) is
// cancelled when the node turns unhealthy meanwhile, so that it never moves the group back to
// a node that gave it up. Found by a 60-minute chaos run: the second round of a slow failback
// took the group back after the public interface went down, and the peer took it again.
func TestLoop_ClaimAbandonedWhenUnhealthy(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	hold := make(chan struct{})
	cloud.set(func(f *fakeCloud) { f.hold = hold })
	h := &fakeHealth{health: datapath.Health{Healthy: true}}
	l := startLoop(t, "i-b", loopConfig(200, 100*time.Millisecond), cloud, h)
	l.gossip.peer("i-a", gossip.StateAlive, 100, true)
	waitFor(t, "the failback claim to start", func() bool {
		var claiming bool
		l.do(context.Background(), func() { claiming = l.groups[0].claiming })
		return claiming
	})
	h.mu.Lock()
	h.health = datapath.Health{Reason: "interface pub0 is down"}
	h.mu.Unlock()
	waitFor(t, "the claim to be abandoned", func() bool { return l.logged("claim abandoned") })
	close(hold)
	// Whatever the loop does next, an unhealthy node claims nothing: EC2 stays on i-a.
	waitFor(t, "a read after the abandoned claim", func() bool { return l.status(t).EC2Owner == "i-a" })
	if eip, routes := cloud.owners(); eip != "i-a" || routes[0] != "i-a" {
		t.Fatalf("after the node turned unhealthy its claim moved the group: EIP %s, routes %v", eip, routes)
	}
	if n := len(cloud.claimLog()); n != 0 {
		t.Fatalf("%d claims reached EC2: %s", n, describe(cloud.claimLog()))
	}
}

// TestLoop_OneWayPartition: i-b stops hearing i-a (higher priority, the owner), counts it dead
// and takes the group, while i-a still hears i-b. i-b says so in its metadata (TookUnseen);
// i-a must not take the group back, neither by failback while it sees i-b alive nor by
// takeover once its own probes of i-b fail, until i-b sees it again. Without the rule the
// group went back to i-a about 1.7 s after i-b took it in a lab run.
func TestLoop_OneWayPartition(t *testing.T) {
	for _, announcedFirst := range []bool{true, false} {
		name := "AnnouncedBeforeRead"
		if !announcedFirst {
			name = "AnnouncedAfterRead"
		}
		t.Run(name, func(t *testing.T) {
			noLeak(t)
			cloud := newFakeCloud("i-a", "rtb-1")
			l := startLoop(t, "i-a", loopConfig(200, 100*time.Millisecond), cloud, nil)
			l.gossip.peer("i-b", gossip.StateAlive, 100, true)
			waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })

			cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
			deaf := gossip.Meta{Healthy: true, Groups: map[string]gossip.GroupMeta{"egress": {Priority: 100, Owns: true, TookUnseen: true}}}
			if !announcedFirst {
				l.gossip.peerMeta("i-b", gossip.StateAlive, gossip.Meta{Healthy: true, Groups: map[string]gossip.GroupMeta{"egress": {Priority: 100, Owns: true}}})
				waitFor(t, "the read of i-b's takeover", func() bool { return l.status(t).EC2Owner == "i-b" })
			}
			l.gossip.peerMeta("i-b", gossip.StateAlive, deaf)
			waitFor(t, "the one-way partition to be noticed", func() bool { return l.logged("one-way partition suspected") })
			waitFor(t, "failback to be held", func() bool { return strings.Contains(l.verdict().Reason, "failback waits until it can") })

			// i-a's probes of i-b now fail too: i-b is dead to i-a, EC2 says it runs.
			l.gossip.peerMeta("i-b", gossip.StateDead, deaf)
			waitFor(t, "the takeover to be held", func() bool {
				return strings.Contains(l.verdict().Reason, "not taking it back across a partition")
			})
			if n := len(cloud.claimLog()); n != 0 {
				t.Fatalf("i-a took the group back from a peer that cannot see it: %s", describe(cloud.claimLog()))
			}

			// i-b hears i-a again and says so: failback rules apply.
			l.gossip.peer("i-b", gossip.StateAlive, 100, true)
			waitFor(t, "failback to i-a", func() bool { return cloud.allOn("i-a") })
			if !l.logged("see each other again") {
				t.Fatal("i-a did not say why it fails back")
			}
		})
	}
}

// TestLoop_PartitionHealedBeforeRead: the peer took the group while the two could not see
// each other, and is back (alive, saying it sees this node) before this node reads the
// takeover from EC2. The read arms the partition rule after the peer's last change; the rule
// must lift in the next round, not wait for another change of the peer: the group fails back.
func TestLoop_PartitionHealedBeforeRead(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-a", loopConfig(200, 100*time.Millisecond), cloud, nil)
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })

	// EC2 cannot be read while the two lose each other and i-b takes the group.
	cloud.set(func(f *fakeCloud) { f.down = errors.New("EC2 unreachable") })
	l.gossip.peer("i-b", gossip.StateDead, 100, true)
	waitFor(t, "i-b gone", func() bool { return l.logged("peer gone") })
	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
	// i-b is back, owning the group and seeing i-a, before i-a can read EC2 again.
	l.gossip.peerMeta("i-b", gossip.StateAlive, gossip.Meta{Healthy: true, Groups: map[string]gossip.GroupMeta{"egress": {Priority: 100, Owns: true}}})
	waitFor(t, "i-b back", func() bool { return strings.Count(l.log.String(), "peer alive") >= 2 })
	cloud.set(func(f *fakeCloud) { f.down = nil })
	waitFor(t, "the partition rule", func() bool { return l.logged("partition suspected") })
	waitFor(t, "failback to i-a", func() bool { return cloud.allOn("i-a") })
	if !l.logged("see each other again") {
		t.Fatal("i-a did not say why it fails back")
	}
}

// TestLoop_TookUnseenAnnounced: a node that took the group from an owner it could not see
// says so while it still cannot see that owner; a takeover from a live owner does not.
func TestLoop_TookUnseenAnnounced(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	announced := func() gossip.GroupMeta {
		var m gossip.Meta
		l.gossip.set(func(g *fakeGossip) { m = g.meta })
		return m.Groups["egress"]
	}

	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	waitFor(t, "i-b to take the group from the dead i-a", func() bool { return cloud.allOn("i-b") })
	waitFor(t, "i-b to announce it took the group unseen", func() bool { gm := announced(); return gm.Owns && gm.TookUnseen })

	l.gossip.set(func(g *fakeGossip) { g.probes["i-a"] = gossip.Probe{Answered: true} })
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the announcement to end once i-b sees i-a", func() bool { gm := announced(); return gm.Owns && !gm.TookUnseen })

	// An operator's takeover from a live owner is not one taken unseen.
	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-a", "i-a" })
	l.gossip.peerMeta("i-a", gossip.StateAlive, gossip.Meta{Healthy: true, Groups: map[string]gossip.GroupMeta{"egress": {Priority: 200, Owns: true}}})
	waitFor(t, "the read of i-a's failback", func() bool { return l.status(t).EC2Owner == "i-a" })
	if _, err := l.Takeover(context.Background(), []string{"egress"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forced takeover", func() bool { return cloud.allOn("i-b") && announced().Owns })
	if announced().TookUnseen {
		t.Fatal("a takeover from a live owner was announced as taken unseen")
	}
}

// TestLoop_HeartbeatFastPath: the successor pings the owner; when the owner stops answering
// and a burst sent after its last answer finds nothing, the successor takes the group while
// memberlist still counts the owner alive. An owner that stops answering heartbeats but
// whose gossip port still accepts connections (a stalled process) is not taken from.
func TestLoop_HeartbeatFastPath(t *testing.T) {
	t.Run("SilentOwnerTaken", func(t *testing.T) {
		noLeak(t)
		cloud := newFakeCloud("i-a", "rtb-1")
		l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
		l.gossip.peer("i-a", gossip.StateAlive, 200, true)
		waitFor(t, "heartbeats to the owner", func() bool {
			var n int
			l.gossip.set(func(g *fakeGossip) { n = g.heartbeats["i-a"] })
			return n >= 3
		})
		if n := l.gossip.confirmCount("i-a"); n != 0 {
			t.Fatalf("%d bursts at an owner that answers its heartbeats", n)
		}
		l.gossip.set(func(g *fakeGossip) { g.silent["i-a"] = true })
		waitFor(t, "the takeover", func() bool { return cloud.allOn("i-b") })
		lt := l.status(t).LastTakeover
		if lt == nil || !strings.Contains(lt.Reason, "ahead of gossip's verdict") {
			t.Fatalf("takeover = %+v, want one ahead of gossip's verdict", lt)
		}
	})
	t.Run("StalledOwnerKept", func(t *testing.T) {
		noLeak(t)
		cloud := newFakeCloud("i-a", "rtb-1")
		l := startLoop(t, "i-b", loopConfig(100, time.Hour), cloud, nil)
		l.gossip.set(func(g *fakeGossip) { g.probes["i-a"] = gossip.Probe{Reachable: true} })
		l.gossip.peer("i-a", gossip.StateAlive, 200, true)
		waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
		l.gossip.set(func(g *fakeGossip) { g.silent["i-a"] = true })
		waitFor(t, "a burst at the quiet owner", func() bool { return l.gossip.confirmCount("i-a") > 0 })
		if !strings.Contains(l.verdict().Reason, "quiet") {
			t.Fatalf("verdict = %+v", l.verdict())
		}
		if cs := cloud.claimLog(); len(cs) != 0 {
			t.Fatalf("claimed from a stalled owner whose port is open: %s", describe(cs))
		}
	})
	t.Run("WatchesTheOneAbove", func(t *testing.T) {
		// i-c (100) watches i-b (200), which would take the group before it; not the owner
		// i-a (300), which i-b watches, nor i-d (50). When i-b goes silent, i-c watches the
		// owner. Unhealthy, it watches no one.
		noLeak(t)
		cloud := newFakeCloud("i-a", "rtb-1")
		h := &fakeHealth{health: datapath.Health{Healthy: true}}
		l := startLoop(t, "i-c", loopConfig(100, time.Hour), cloud, h)
		l.gossip.peer("i-a", gossip.StateAlive, 300, true)
		l.gossip.peer("i-b", gossip.StateAlive, 200, true)
		l.gossip.peer("i-d", gossip.StateAlive, 50, true)
		waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
		beats := func() map[string]int {
			var m map[string]int
			l.gossip.set(func(g *fakeGossip) { m = maps.Clone(g.heartbeats) })
			return m
		}
		waitFor(t, "heartbeats to i-b", func() bool { return beats()["i-b"] > 2 })
		// Counted from here: until the loop has seen every peer it may have watched the only
		// one it knew, and a busy machine makes that moment longer.
		before := beats()
		waitFor(t, "more heartbeats to i-b", func() bool { return beats()["i-b"] >= before["i-b"]+5 })
		if b := beats(); b["i-a"] != before["i-a"] || b["i-d"] != before["i-d"] {
			t.Fatalf("heartbeats %v, before %v: only i-b, the one just above, is watched", b, before)
		}
		l.gossip.set(func(g *fakeGossip) { g.silent["i-b"] = true })
		waitFor(t, "heartbeats to the owner once i-b is found silent", func() bool { return beats()["i-a"] > 0 })
		h.mu.Lock()
		h.health = datapath.Health{Reason: "interface pub0 is down"}
		h.mu.Unlock()
		waitFor(t, "the heartbeats to stop", func() bool { return l.logged("heartbeat stopped: peer=i-a") })
	})
}

// TestLoop_PartitionReadBeforeVerdict: a partition; i-b counts i-a (higher priority, the owner)
// dead first and takes the group. i-a reads the takeover while memberlist still has i-b alive,
// then counts i-b dead itself. Having heard nothing from i-b since before the takeover, i-a
// must take it for a partition and not take the group back. In two chaos runs the group went
// back this way 0.4 s after i-b took it.
func TestLoop_PartitionReadBeforeVerdict(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoop(t, "i-a", loopConfig(200, 100*time.Millisecond), cloud, nil)
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })

	// The partition: nothing from i-b from now on.
	l.gossip.set(func(g *fakeGossip) {
		g.contact["i-b"] = time.Now().Add(-time.Second)
		g.silent["i-b"] = true
	})
	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
	readAgain(t, l)
	waitFor(t, "the read of i-b's takeover", func() bool { return l.status(t).EC2Owner == "i-b" })
	l.gossip.set(func(g *fakeGossip) {
		m := g.members["i-b"]
		m.State, m.Gone = gossip.StateDead, time.Now()
		g.members["i-b"] = m
		g.events <- gossip.Event{Kind: gossip.EventLeave, Member: m, At: m.Gone}
	})
	waitFor(t, "the partition to be noticed", func() bool { return l.logged("was not heard from since") })
	waitFor(t, "the takeover to be held", func() bool {
		return strings.Contains(l.verdict().Reason, "not taking it back across a partition")
	})
	if cs := cloud.claimLog(); len(cs) != 0 {
		t.Fatalf("i-a took the group back across the partition: %s", describe(cs))
	}
}
