package agent

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func alive(name string, prio int) Peer {
	return Peer{Name: name, Alive: true, Healthy: true, InGroup: true, Priority: prio, Since: t0}
}

func dead(name string, prio int) Peer {
	p := alive(name, prio)
	p.Alive = false
	p.Since = t0.Add(50 * time.Second)
	return p
}

func peers(ps ...Peer) map[string]Peer {
	m := make(map[string]Peer)
	for _, p := range ps {
		m[p.Name] = p
	}
	return m
}

func with(p Peer, f func(*Peer)) Peer { f(&p); return p }

// silence makes name quiet and found dead by a burst while memberlist still has it alive.
func silence(v *View, name string) {
	v.Peers[name] = with(v.Peers[name], func(p *Peer) { p.Silent = true })
	if name == v.Owner {
		v.OwnerQuiet, v.OwnerConfirmedDead = true, true
	}
}

func route(table, target, state string) Route {
	return Route{Table: table, Destination: "0.0.0.0/0", Target: target, State: state}
}

// base is the view of node "b" (priority 100) in a two-node cluster where "a" (200) owns.
func base() View {
	return View{
		Now: t0.Add(time.Minute), Self: "b",
		Peers:         peers(alive("a", 200), alive("b", 100)),
		FailbackDelay: 30 * time.Second,
		Observed:      true, Owner: "a", OwnerRunning: true, OwnerSince: t0,
		SelfEligibleSince: t0, StartupGraceOver: true,
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		view    func(v *View)
		want    Action
		desired string
		reason  string
	}{
		{name: "HealthyOwnerKept", view: func(v *View) {}, want: ActNone, desired: "a", reason: "a should own"},
		{name: "NothingBeforeFirstObservation", view: func(v *View) { v.Observed = false; v.Owner = "" }, want: ActNone, reason: "waiting for the first read"},
		{name: "OwnerDiesConfirmFirst", view: func(v *View) { v.Peers["a"] = dead("a", 200) },
			want: ActConfirm, desired: "b", reason: "declared dead by gossip"},
		{name: "OwnerDiesConfirmed", view: func(v *View) { v.Peers["a"] = dead("a", 200); v.OwnerConfirmedDead = true },
			want: ActClaim, desired: "b", reason: "confirmed"},
		{name: "OwnerLeftConfirmedFirst", view: func(v *View) {
			// A leave with no recent announcement before it may be a replayed packet.
			v.Peers["a"] = with(dead("a", 200), func(p *Peer) { p.Left = true })
		}, want: ActConfirm, reason: "left the cluster"},
		{name: "OwnerLeftConfirmed", view: func(v *View) {
			v.Peers["a"] = with(dead("a", 200), func(p *Peer) { p.Left = true })
			v.OwnerConfirmedDead = true
		}, want: ActClaim, reason: "left the cluster (confirmed"},
		{name: "OwnerLeftButAnswers", view: func(v *View) {
			v.Peers["a"] = with(dead("a", 200), func(p *Peer) { p.Left = true })
			v.OwnerOtherKey = false
		}, want: ActConfirm},
		{name: "OwnerAnnouncesLeaving", view: func(v *View) { v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Leaving = true }) },
			want: ActClaim, reason: "shutting down"},
		{name: "OwnerUnhealthy", view: func(v *View) {
			v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Healthy = false; p.Reason = "masquerade rule missing" })
		}, want: ActClaim, desired: "b", reason: "unhealthy: masquerade rule missing"},
		{name: "OwnerYielded", view: func(v *View) { v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Yielded = true }) },
			want: ActClaim, reason: "yielded"},
		{name: "SelfYieldedTakesNothing", view: func(v *View) {
			v.Peers["a"] = dead("a", 200)
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Yielded = true })
			v.OwnerConfirmedDead = true
		}, want: ActNone, reason: "yielded"},
		{name: "SelfUnhealthyTakesNothing", view: func(v *View) {
			v.Peers["a"] = dead("a", 200)
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Healthy = false; p.Reason = "interface pub0 is down" })
			v.OwnerConfirmedDead = true
		}, want: ActNone, reason: "unhealthy"},
		{name: "UnassociatedEIP", view: func(v *View) { v.Peers["a"] = dead("a", 200); v.Owner = "" },
			want: ActClaim, reason: "not associated"},

		// b owns after a failover; a (higher priority) comes back. Seen from a.
		{name: "FailbackBeforeDelay", view: func(v *View) {
			v.Self, v.Owner, v.OwnerSince = "a", "b", t0.Add(30*time.Second)
			v.SelfEligibleSince = t0.Add(45 * time.Second)
		}, want: ActNone, desired: "a", reason: "failback from b in 15s"},
		{name: "FailbackAfterDelay", view: func(v *View) {
			v.Self, v.Owner, v.OwnerSince = "a", "b", t0.Add(30*time.Second)
			v.SelfEligibleSince = t0.Add(29 * time.Second)
		}, want: ActClaim, desired: "a", reason: "failback from b after 30s"},
		{name: "FailbackManual", view: func(v *View) {
			v.Self, v.Owner, v.ManualFailback = "a", "b", true
			v.Now = t0.Add(time.Hour)
		}, want: ActNone, reason: "failback is manual"},
		{name: "FlappingOwnerRestartsFailbackClock", view: func(v *View) {
			// a has been eligible for long, but b only came back alive (in a's view) 10s ago.
			v.Self, v.Owner = "a", "b"
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Since = v.Now.Add(-10 * time.Second) })
		}, want: ActNone, reason: "failback from b in 20s"},
		{name: "LowerPriorityNeverReclaims", view: func(v *View) { v.Owner = "a" }, want: ActNone},
		{name: "ResumeAfterYield", view: func(v *View) {
			// a yielded to b earlier and has just resumed: it is eligible again from now.
			v.Self, v.Owner, v.OwnerSince = "a", "b", t0
			v.SelfEligibleSince = v.Now.Add(-time.Second)
		}, want: ActNone, reason: "failback from b in 29s"},

		// Partition: a owned, b took over. Seen from each side.
		{name: "PartitionBackupSide", view: func(v *View) { v.Peers["a"] = dead("a", 200); v.OwnerConfirmedDead = true },
			want: ActClaim, reason: "confirmed"},
		{name: "PartitionFormerOwnerSide", view: func(v *View) {
			v.Self, v.Owner, v.DisplacedBy = "a", "b", "b"
			v.Peers["b"] = dead("b", 100)
			v.OwnerConfirmedDead = true
		}, want: ActNone, desired: "a", reason: "not taking it back across a partition"},
		{name: "OneWayPartitionNoFailback", view: func(v *View) {
			// b cannot hear a and took the group; a hears b, alive, and would fail back.
			v.Self, v.Owner, v.DisplacedBy = "a", "b", "b"
			v.Now = t0.Add(time.Hour)
		}, want: ActNone, desired: "a", reason: "failback waits until it can"},
		{name: "OneWayPartitionUnhealthyOwnerTaken", view: func(v *View) {
			v.Self, v.Owner, v.DisplacedBy = "a", "b", "b"
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Healthy, p.Reason = false, "pub0 down" })
		}, want: ActClaim, desired: "a", reason: "unhealthy"},
		{name: "PartitionFormerOwnerPeerStopped", view: func(v *View) {
			v.Self, v.Owner, v.DisplacedBy, v.OwnerRunning = "a", "b", "b", false
			v.Peers["b"] = dead("b", 100)
			v.OwnerConfirmedDead = true
		}, want: ActClaim, reason: "confirmed"},

		// Three members: a (300) owner, b (200), c (100). Seen from c.
		{name: "ThreeMembersOwnerDiesSecondTakes", view: func(v *View) {
			v.Self = "c"
			v.Peers = peers(dead("a", 300), alive("b", 200), alive("c", 100))
			v.OwnerConfirmedDead = true
		}, want: ActNone, desired: "b", reason: "b should own"},
		{name: "ThreeMembersBothDown", view: func(v *View) {
			v.Self = "c"
			v.Peers = peers(dead("a", 300), dead("b", 200), alive("c", 100))
			v.OwnerConfirmedDead = true
		}, want: ActClaim, desired: "c"},
		{name: "TieBrokenByName", view: func(v *View) {
			v.Self = "c"
			v.Peers = peers(dead("a", 300), alive("b", 100), alive("c", 100))
			v.OwnerConfirmedDead = true
		}, want: ActNone, desired: "b"},

		// Drift: this node owns the EIP but a route points elsewhere.
		{name: "DriftRepaired", view: func(v *View) {
			v.Self, v.Owner = "a", "a"
			v.Routes = []Route{route("rtb-1", "", "blackhole"), route("rtb-2", "a", "active")}
		}, want: ActClaim, reason: "repair: rtb-1 0.0.0.0/0 is blackhole"},
		{name: "DriftNotRepairedWhileYielded", view: func(v *View) {
			v.Self, v.Owner = "a", "a"
			v.Routes = []Route{route("rtb-1", "", "missing")}
			v.Peers["a"] = with(alive("a", 200), func(p *Peer) { p.Yielded = true })
		}, want: ActNone},
		{name: "DriftOnLowerPeerRepaired", view: func(v *View) {
			v.Self, v.Owner = "a", "a"
			v.Routes = []Route{route("rtb-1", "b", "active")}
		}, want: ActClaim, reason: "repair: rtb-1 0.0.0.0/0 is active via b"},
		{name: "DriftNotFoughtWithOutrankingPeer", view: func(v *View) {
			// b owns the EIP (moved by hand) while a, which outranks it, has the routes:
			// a repairs that split toward itself; b must not fight it.
			v.Owner = "b"
			v.Routes = []Route{route("rtb-1", "a", "active")}
			v.Peers["b"] = alive("b", 100)
		}, want: ActNone, reason: "this node owns the group"},
		{name: "DriftNotFoughtWithPeerThatSaysItOwns", view: func(v *View) {
			v.Self, v.Owner = "a", "a"
			v.Routes = []Route{route("rtb-1", "b", "active")}
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Owns = true })
		}, want: ActNone},
		{name: "DriftManualFailbackOwnerKeepsRoutes", view: func(v *View) {
			// With manual failback nobody takes the group back, so the owner repairs even
			// routes on a peer that outranks it.
			v.Self, v.Owner, v.ManualFailback = "b", "b", true
			v.Routes = []Route{route("rtb-1", "a", "active")}
		}, want: ActClaim, reason: "repair"},
		{name: "DriftToUnseenInstanceWaitsForPeers", view: func(v *View) {
			v.Self, v.Owner, v.StartupGraceOver = "a", "a", false
			v.Routes = []Route{route("rtb-1", "i-new", "active")}
		}, want: ActNone},
		{name: "DriftToUnseenInstanceAfterGrace", view: func(v *View) {
			v.Self, v.Owner = "a", "a"
			v.Routes = []Route{route("rtb-1", "i-new", "active")}
		}, want: ActClaim, reason: "via i-new"},
		{name: "DriftOnlyOnAFreshRead", view: func(v *View) { v.Self, v.Owner = "a", "a" }, want: ActNone},

		// Split: EIP on one instance, routes on another (EIP moved by hand to b). Seen from a.
		{name: "SplitRepairedOnceSettled", view: func(v *View) {
			v.Self, v.Owner, v.OwnerSince = "a", "b", v.Now.Add(-2*time.Second)
			v.LayoutSince, v.ObservedAt = v.Now.Add(-2*time.Second), v.Now.Add(-100*time.Millisecond)
			v.Routes = []Route{route("rtb-1", "a", "active"), route("rtb-2", "a", "active")}
		}, want: ActClaim, desired: "a", reason: "split: elastic IP on b, routes on a"},
		{name: "SplitFirstSeenReadsAgain", view: func(v *View) {
			v.Self, v.Owner, v.OwnerSince = "a", "b", v.Now.Add(-200*time.Millisecond)
			v.LayoutSince, v.ObservedAt = v.Now.Add(-200*time.Millisecond), v.Now.Add(-200*time.Millisecond)
			v.Routes = []Route{route("rtb-1", "a", "active")}
		}, want: ActNone, reason: "unless the next read shows it resolved"},
		{name: "SplitNotRepairedByLowerPriority", view: func(v *View) {
			v.Owner, v.LayoutSince, v.ObservedAt = "a", t0, v.Now
			v.Routes = []Route{route("rtb-1", "b", "active")}
		}, want: ActNone, reason: "a should own"},
		{name: "SplitManualFailbackLeftToOwner", view: func(v *View) {
			v.Self, v.Owner, v.ManualFailback = "a", "b", true
			v.LayoutSince, v.ObservedAt = t0, v.Now
			v.Routes = []Route{route("rtb-1", "a", "active")}
		}, want: ActNone, reason: "failback is manual"},
		{name: "NoSplitWaitsForFailbackDelay", view: func(v *View) {
			v.Self, v.Owner, v.OwnerSince = "a", "b", v.Now.Add(-2*time.Second)
			v.LayoutSince, v.ObservedAt = t0, v.Now
			v.Routes = []Route{route("rtb-1", "b", "active"), route("rtb-2", "", "missing")}
		}, want: ActNone, reason: "failback from b in 28s"},

		// EC2 says the owner is stopped while its agent still gossips.
		{name: "OwnerStoppedInEC2WhileAlive", view: func(v *View) { v.OwnerRunning, v.OwnerState = false, "stopped" },
			want: ActClaim, desired: "b", reason: "owner a is unhealthy: EC2 reports it stopped"},

		// The operator's takeover.
		{name: "ForcedTakesFromHealthyOwner", view: func(v *View) { v.Forced = true }, want: ActClaim, reason: "operator asked"},
		{name: "ForcedWhileOwning", view: func(v *View) { v.Self, v.Owner, v.Forced = "a", "a", true }, want: ActClaim, reason: "operator asked"},
		{name: "ForcedRefusedWhenUnhealthy", view: func(v *View) {
			v.Forced = true
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Healthy = false; p.Reason = "interface pub0 is down" })
		}, want: ActRefuse, reason: "unhealthy (interface pub0 is down)"},
		{name: "ForcedRefusedWhenLeaving", view: func(v *View) {
			v.Forced = true
			v.Peers["b"] = with(alive("b", 100), func(p *Peer) { p.Leaving = true })
		}, want: ActRefuse, reason: "shutting down"},
		{name: "ForcedRefusedBeforeFirstRead", view: func(v *View) { v.Forced, v.Observed = true, false }, want: ActRefuse, reason: "not been read"},

		// The owner goes quiet before memberlist declares it dead.
		{name: "QuietOwnerProbedEarly", view: func(v *View) { v.OwnerQuiet = true }, want: ActConfirm, desired: "a", reason: "quiet"},
		{name: "QuietOwnerNotProbedByThirdInLine", view: func(v *View) {
			v.Self, v.OwnerQuiet = "c", true
			v.Peers = peers(alive("a", 300), alive("b", 200), alive("c", 100))
		}, want: ActNone},
		{name: "QuietOwnerConfirmedTakenAheadOfGossip", view: func(v *View) { silence(v, "a") },
			want: ActClaim, desired: "b", reason: "dead (confirmed by direct probes), ahead of gossip's verdict"},
		{name: "QuietOwnerConfirmedNotSuccessor", view: func(v *View) {
			v.Self = "c"
			v.Peers = peers(alive("a", 300), alive("b", 200), alive("c", 100))
			silence(v, "a")
		}, want: ActNone, desired: "b"},
		{name: "QuietOwnerConfirmedAcrossOneWayPartition", view: func(v *View) {
			// a is the former owner that b took the group from without seeing it.
			v.Self, v.Owner, v.DisplacedBy = "a", "b", "b"
			silence(v, "b")
		}, want: ActNone, desired: "a", reason: "not taking it back across a partition"},
		{name: "SilentOwnerAndSuccessorPassedOver", view: func(v *View) {
			// Both that outrank c died; memberlist still has them alive.
			v.Self = "c"
			v.Peers = peers(alive("a", 300), alive("b", 200), alive("c", 100))
			silence(v, "a")
			silence(v, "b")
		}, want: ActClaim, desired: "c", reason: "ahead of gossip's verdict"},
		{name: "SilentPeerNotOwnerChangesNothing", view: func(v *View) {
			v.Self = "c"
			v.Peers = peers(alive("a", 300), alive("b", 200), alive("c", 100))
			silence(v, "b")
		}, want: ActNone, desired: "a"},
		{name: "QuietOwnerOtherKeyNotTaken", view: func(v *View) { v.OwnerQuiet, v.OwnerOtherKey = true, true },
			want: ActConfirm},

		// An owner that runs with another gossip key.
		{name: "OtherKeyUnknownOwnerNotTaken", view: func(v *View) {
			// A third node started with the wrong key sees none of the cluster: the owner is
			// no member of its own view, and EC2 says it runs.
			v.Self, v.Owner = "c", "a"
			v.Peers = peers(alive("c", 300))
			v.OwnerOtherKey = true
		}, want: ActNone, desired: "c", reason: "another gossip key"},
		{name: "OtherKeyMemberNotTaken", view: func(v *View) {
			v.Peers["a"] = dead("a", 200)
			v.OwnerOtherKey = true
		}, want: ActNone, reason: "another key"},
		{name: "OtherKeyUnknownOwnerStoppedInEC2", view: func(v *View) {
			v.Self, v.Owner, v.OwnerRunning = "c", "a", false
			v.Peers = peers(alive("c", 300))
			v.OwnerOtherKey = true
		}, want: ActClaim, reason: "not running"},

		// An owner instance that never joined the cluster.
		{name: "UnknownOwnerDuringStartup", view: func(v *View) {
			v.Peers, v.Owner, v.StartupGraceOver = peers(alive("b", 100)), "i-old", false
		}, want: ActNone, reason: "waiting for peers"},
		{name: "UnknownOwnerProbed", view: func(v *View) { v.Peers, v.Owner = peers(alive("b", 100)), "i-old" },
			want: ActConfirm, reason: "not a member"},
		{name: "UnknownOwnerAnswersNot", view: func(v *View) {
			v.Peers, v.Owner, v.OwnerConfirmedDead = peers(alive("b", 100)), "i-old", true
		}, want: ActClaim},
		{name: "UnknownOwnerStopped", view: func(v *View) {
			v.Peers, v.Owner, v.OwnerRunning, v.StartupGraceOver = peers(alive("b", 100)), "i-old", false, false
		}, want: ActClaim, reason: "not running"},
		{name: "ForgedDeathOfUnreachableOwnerNeedsConfirmation", view: func(v *View) {
			// gossip says a is dead but the confirmation has not run (or a answered).
			v.Peers["a"] = dead("a", 200)
			v.OwnerConfirmedDead = false
		}, want: ActConfirm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := base()
			tt.view(&v)
			got := Decide(v)
			if got.Action != tt.want {
				t.Fatalf("action = %s (%s), want %s", got.Action, got.Reason, tt.want)
			}
			if tt.desired != "" && got.Desired != tt.desired {
				t.Fatalf("desired = %q, want %q", got.Desired, tt.desired)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Fatalf("reason = %q, want it to contain %q", got.Reason, tt.reason)
			}
			// Invariant 1: whatever the view, a claim is only ever for this node, and only
			// when this node is the one that should own the group or already owns it.
			if got.Action == ActClaim && got.Desired != v.Self && v.Owner != v.Self && !v.Forced {
				t.Fatalf("claim by %s while %q should own", v.Self, got.Desired)
			}
		})
	}
}

// TestDecide_NeverFromLiveHealthyOwner checks invariant 2 over many views: a live, healthy,
// not-yielded owner is never taken from, except by failback after the delay.
func TestDecide_NeverFromLiveHealthyOwner(t *testing.T) {
	for _, selfPrio := range []int{50, 100, 300} {
		for _, delay := range []time.Duration{time.Second, 30 * time.Second, time.Hour} {
			for _, manual := range []bool{false, true} {
				v := base()
				v.Peers["b"] = alive("b", selfPrio)
				v.FailbackDelay, v.ManualFailback = delay, manual
				got := Decide(v)
				elapsed := v.Now.Sub(t0)
				mayFailback := selfPrio > 200 && !manual && elapsed >= delay
				if got.Action == ActClaim && !mayFailback {
					t.Errorf("prio %d delay %v manual %v: claimed from a live healthy owner: %s", selfPrio, delay, manual, got.Reason)
				}
				if got.Action != ActClaim && mayFailback {
					t.Errorf("prio %d delay %v: no failback: %s", selfPrio, delay, got.Reason)
				}
			}
		}
	}
}

// TestWatched: heartbeats form a chain: the successor pings the owner, every other eligible
// node the eligible peer just above it; a peer found silent and dead is passed over.
func TestWatched(t *testing.T) {
	v := func(self, owner string, ps ...Peer) View { return View{Self: self, Owner: owner, Peers: peers(ps...)} }
	four := []Peer{alive("a", 400), alive("b", 300), alive("c", 200), alive("d", 100)}
	for _, tt := range []struct {
		name string
		view View
		want []string
	}{
		{"SuccessorWatchesOwner", v("b", "a", four...), []string{"a"}},
		{"ThirdWatchesSecond", v("c", "a", four...), []string{"b"}},
		{"FourthWatchesThird", v("d", "a", four...), []string{"c"}},
		{"OwnerWatchesNobody", v("a", "a", four...), nil},
		{"SilentSecondPassedOver", func() View {
			w := v("c", "a", four...)
			w.Peers["b"] = with(w.Peers["b"], func(p *Peer) { p.Silent = true })
			return w
		}(), []string{"a"}},
		{"UnhealthyPeerPassedOver", func() View {
			w := v("d", "a", four...)
			w.Peers["c"] = with(w.Peers["c"], func(p *Peer) { p.Healthy = false })
			return w
		}(), []string{"b"}},
		{"ReturningHigherPriorityWatchesOwner", v("a", "b", four...), []string{"b"}},
		{"BelowReturningWatchesIt", v("c", "b", four...), []string{"a"}},
		{"NotEligibleWatchesNobody", func() View {
			w := v("c", "a", four...)
			w.Peers["c"] = with(w.Peers["c"], func(p *Peer) { p.Yielded = true })
			return w
		}(), nil},
		{"DeadOwnerNotWatched", v("b", "a", dead("a", 400), alive("b", 300)), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := watched(tt.view); !slices.Equal(got, tt.want) {
				t.Fatalf("watched = %v, want %v", got, tt.want)
			}
		})
	}
}
