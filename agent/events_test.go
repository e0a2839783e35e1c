package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natganker/natganker/gossip"
)

// TestTakeoverCause runs every claim rule of Decide and checks that its reason maps to a
// fixed cause: a reason reworded in decide.go must not turn into the metric label "other".
func TestTakeoverCause(t *testing.T) {
	for _, tt := range []struct {
		name string
		view func(v *View)
		want string
	}{
		{"Operator", func(v *View) { v.Forced = true }, "operator"},
		{"Repair", func(v *View) {
			v.Self, v.Owner = "a", "a"
			v.Routes = []Route{route("rtb-1", "", "blackhole")}
		}, "repair"},
		{"Unassociated", func(v *View) { v.Peers["a"] = dead("a", 200); v.Owner = "" }, "unassociated"},
		{"NotInGroup", func(v *View) {
			// Eligible for nothing, so that b is the desired owner; alive, so not dead.
			v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.InGroup = false })
		}, "owner_not_in_group"},
		{"Leaving", func(v *View) { v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Leaving = true }) }, "owner_leaving"},
		{"Unhealthy", func(v *View) {
			v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Healthy = false; p.Reason = "masquerade rule missing" })
		}, "owner_unhealthy"},
		{"StoppedInEC2", func(v *View) { v.OwnerRunning, v.OwnerState = false, "stopped" }, "owner_unhealthy"},
		{"Yielded", func(v *View) { v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Yielded = true }) }, "owner_yielded"},
		{"Split", func(v *View) {
			v.Self, v.Owner = "a", "b"
			v.Routes = []Route{route("rtb-1", "a", "active")}
			v.ObservedAt = v.LayoutSince.Add(2 * splitSettle)
		}, "split"},
		{"Failback", func(v *View) { v.Self, v.Owner = "a", "b" }, "failback"},
		{"Left", func(v *View) {
			v.Peers["a"] = with(dead("a", 200), func(p *Peer) { p.Left = true })
			v.OwnerConfirmedDead = true
		}, "owner_left"},
		{"Dead", func(v *View) { v.Peers["a"] = dead("a", 200); v.OwnerConfirmedDead = true }, "owner_dead"},
		{"NeverSeenNotRunning", func(v *View) { delete(v.Peers, "a"); v.Owner, v.OwnerRunning = "i-gone", false }, "owner_not_running"},
		{"NeverSeenSilent", func(v *View) { delete(v.Peers, "a"); v.Owner, v.OwnerConfirmedDead = "i-gone", true }, "owner_unknown_dead"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := base()
			tt.view(&v)
			verdict := Decide(v)
			if verdict.Action != ActClaim {
				t.Fatalf("Decide = %s (%s), want a claim", verdict.Action, verdict.Reason)
			}
			if got := takeoverCause(verdict.Reason); got != tt.want {
				t.Errorf("takeoverCause(%q) = %q, want %q", verdict.Reason, got, tt.want)
			}
		})
	}
}

// eventLog is an EventSink that keeps every event.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) Event(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// of returns the events of kind k.
func (l *eventLog) of(k EventKind) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// TestLoop_Events: a failover, seen through the events the loop emits: the peer alive then
// dead, the burst that confirmed it, the takeover claim, one acquire carrying the
// takeover's timings however often EC2 is read again, and a release when EC2 shows the
// group moved elsewhere.
func TestLoop_Events(t *testing.T) {
	noLeak(t)
	log := &eventLog{}
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2")
	l := startLoopSinks(t, "i-b", loopConfig(100, time.Hour), cloud, log)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	waitFor(t, "the peer", func() bool { return len(log.of(EventMember)) == 1 })
	if hs := log.of(EventHealth); len(hs) != 1 || !hs[0].Healthy || !hs[0].DatapathHealthy {
		t.Errorf("health events = %+v, want one saying healthy", hs)
	}

	l.gossip.set(func(g *fakeGossip) {
		g.contact["i-a"] = time.Now().Add(-time.Second)
		g.silent["i-a"] = true
		g.probes["i-a"] = gossip.Probe{Took: 30 * time.Millisecond}
	})
	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	waitFor(t, "the acquire", func() bool { return len(log.of(EventAcquire)) == 1 })
	for range 3 {
		readAgain(t, l)
	}

	ms := log.of(EventMember)
	if len(ms) != 2 || ms[0].State != "alive" || ms[1].State != "dead" || ms[1].Member != "i-a" {
		t.Errorf("member events = %+v", ms)
	}
	if bs := log.of(EventBurst); len(bs) == 0 || bs[len(bs)-1].Outcome != BurstUnreachable || bs[len(bs)-1].Member != "i-a" {
		t.Errorf("burst events = %+v, want the last one at i-a finding nothing", bs)
	}
	cs := log.of(EventClaim)
	if len(cs) != 1 || cs[0].Cause != "owner_dead" || cs[0].Repair || cs[0].Takeover == nil || cs[0].Takeover.Error != "" {
		t.Fatalf("claim events = %+v, want one takeover of a dead owner", cs)
	}
	as := log.of(EventAcquire)
	if len(as) != 1 {
		t.Fatalf("%d acquire events, want 1", len(as))
	}
	if a := as[0]; a.From != "i-a" || a.To != "i-b" || a.Cause != "takeover" || a.Takeover == nil || a.Takeover.Confirmed != 30*time.Millisecond {
		t.Errorf("acquire = %+v", a)
	}

	cloud.set(func(f *fakeCloud) { f.eip = "i-c" })
	readAgain(t, l)
	waitFor(t, "the release", func() bool { return len(log.of(EventRelease)) == 1 })
	if r := log.of(EventRelease)[0]; r.From != "i-b" || r.To != "i-c" || r.Cause != "taken" || !strings.Contains(r.Reason, "i-c") {
		t.Errorf("release = %+v", r)
	}
	if n := len(log.of(EventAcquire)); n != 1 {
		t.Errorf("%d acquire events, want still 1", n)
	}
}

// TestLoop_EventsOwnerAtStart: a node that holds the group when it starts announces it once.
func TestLoop_EventsOwnerAtStart(t *testing.T) {
	noLeak(t)
	log := &eventLog{}
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoopSinks(t, "i-a", loopConfig(200, time.Hour), cloud, log)
	waitFor(t, "the acquire", func() bool { return len(log.of(EventAcquire)) == 1 })
	for range 3 {
		readAgain(t, l)
	}
	as := log.of(EventAcquire)
	if len(as) != 1 || as[0].Cause != "start" || as[0].Takeover != nil || as[0].From != "" {
		t.Errorf("acquire events = %s", fmt.Sprint(as))
	}
}

// readsOf returns how many times the agent read the fake EC2.
func readsOf(f *fakeCloud) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// readAgain makes the agent read EC2 once more and waits for the read and the decision
// round after it.
func readAgain(t *testing.T, l *loopAgent) {
	t.Helper()
	// Started on the loop when no read is running, so that the next read counted is this one.
	n := 0
	waitFor(t, "a read to start", func() bool {
		started := false
		if err := l.do(context.Background(), func() {
			if !l.groups[0].observing {
				n = readsOf(l.cloud)
				l.observe(l.groups[0])
				started = true
			}
		}); err != nil {
			t.Fatal(err)
		}
		return started
	})
	waitFor(t, "a read", func() bool { return readsOf(l.cloud) > n })
	waitFor(t, "its result", func() bool {
		var observing bool
		l.do(context.Background(), func() { observing = l.groups[0].observing })
		return !observing
	})
}
