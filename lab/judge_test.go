package lab

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/config"
)

// history builds a synthetic record, sample by sample, for the judge's table tests.
type history struct {
	t0  time.Time
	now time.Time
	cur Sample
	rec Record
}

func newHistory() *history {
	t0 := time.Unix(1_000_000, 0)
	h := &history{t0: t0, now: t0}
	healthy := func(host string) HostTruth {
		return HostTruth{LinksUp: true, PublicUp: true, Masq: true, Agent: true, Priority: DefaultPriority(host), IMDS: true,
			AgentStart: t0.Add(-time.Minute)}
	}
	h.cur = Sample{EIP: Nat1, Routes: []string{Nat1, Nat1}, Hosts: map[string]HostTruth{Nat1: healthy(Nat1), Nat2: healthy(Nat2)},
		DropIn: map[string]bool{}}
	h.rec = Record{Start: t0, IDs: map[string]string{Nat1: "i-bbb", Nat2: "i-aaa"}, Bounds: BoundsFor(config.Default(), 5*time.Second)}
	return h
}

// at is the instant s seconds into the record.
func (h *history) at(s float64) time.Time { return h.t0.Add(time.Duration(s * float64(time.Second))) }

// until records samples every 100 ms with the current state up to s seconds.
func (h *history) until(s float64) *history {
	for end := h.at(s); h.now.Before(end); h.now = h.now.Add(refereeInterval) {
		smp := h.cur
		smp.At = h.now
		smp.Routes = slices.Clone(h.cur.Routes)
		smp.Hosts = map[string]HostTruth{Nat1: h.cur.Hosts[Nat1], Nat2: h.cur.Hosts[Nat2]}
		smp.DropIn = map[string]bool{Nat1: h.cur.DropIn[Nat1], Nat2: h.cur.DropIn[Nat2]}
		h.rec.Samples = append(h.rec.Samples, smp)
	}
	return h
}

func (h *history) owner(host string) *history {
	h.cur.EIP = host
	h.cur.Routes = []string{host, host}
	return h
}

func (h *history) host(name string, fn func(*HostTruth)) *history {
	ht := h.cur.Hosts[name]
	fn(&ht)
	h.cur.Hosts[name] = ht
	return h
}

func (h *history) fault(kind FaultKind, host string, from, to float64) *history {
	h.rec.Faults = append(h.rec.Faults, &Fault{ID: len(h.rec.Faults) + 1, Kind: kind, Host: host, Start: h.at(from), End: h.at(to)})
	return h
}

func (h *history) gap(from, to float64) *history {
	h.rec.Gaps = append(h.rec.Gaps, Gap{From: h.at(from), To: h.at(to)})
	return h
}

func (h *history) judge(end float64) *Judgement {
	h.until(end)
	h.rec.End = h.at(end)
	return Judge(h.rec)
}

func dead(t *HostTruth) { t.LinksUp, t.Agent = false, false }
func revived(at time.Time) func(*HostTruth) {
	return func(t *HostTruth) { t.LinksUp, t.Agent, t.AgentStart = true, true, at }
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *history) *Judgement
		want  []string // invariants violated, sorted
	}{
		{"HardKillTakeoverAndFailback", func(h *history) *Judgement {
			h.until(10).host(Nat1, dead).until(11.5).owner(Nat2).until(20)
			h.host(Nat1, revived(h.at(20))).until(26).owner(Nat1)
			return h.fault(FaultHardKill, Nat1, 10, 20).gap(10, 11.6).judge(40)
		}, nil},
		{"HardKillStranded", func(h *history) *Judgement {
			h.until(10).host(Nat1, dead).until(16).owner(Nat2)
			return h.fault(FaultHardKill, Nat1, 10, 30).gap(10, 16.1).judge(30)
		}, []string{"I2", "I5"}},
		{"AgentKillTakeoverLate", func(h *history) *Judgement {
			h.until(10).host(Nat1, func(t *HostTruth) { t.Agent = false }).until(14).owner(Nat2)
			return h.fault(FaultAgentKill, Nat1, 10, 30).judge(30)
		}, []string{"I2"}},
		{"StandbyDeadOwnerKeepsGroup", func(h *history) *Judgement {
			h.until(10).host(Nat2, dead)
			return h.fault(FaultHardKill, Nat2, 10, 30).judge(30)
		}, nil},
		{"NoPeerToTakeOver", func(h *history) *Judgement {
			h.until(5).host(Nat2, func(t *HostTruth) { t.OtherKey = true }).until(10).host(Nat1, dead)
			j := h.fault(FaultWrongKey, Nat2, 5, 40).fault(FaultHardKill, Nat1, 10, 40).judge(40)
			if j.Inapplicable == 0 {
				t.Errorf("I2 with no able peer not counted as inapplicable")
			}
			return j
		}, nil},
		{"SplitTooLong", func(h *history) *Judgement {
			h.until(10)
			h.cur.EIP = Nat2
			return h.until(13).owner(Nat1).judge(20)
		}, []string{"I1"}},
		{"SplitHeldUpByEC2Outage", func(h *history) *Judgement {
			h.until(8).host(Nat1, dead).until(10)
			h.cur.EIP = Nat2
			return h.until(25).owner(Nat2).fault(FaultEC2Outage, "", 9, 15).fault(FaultHardKill, Nat1, 8, 40).gap(8, 25).judge(40)
		}, nil},
		{"FalseFailoverUnderLoss", func(h *history) *Judgement {
			h.until(10).owner(Nat2).until(30).owner(Nat1)
			return h.fault(FaultLoss, "", 5, 25).judge(40)
		}, []string{"I3"}},
		{"FailbackBeforeDelay", func(h *history) *Judgement {
			h.until(10).host(Nat1, dead).until(11).owner(Nat2).until(20)
			h.host(Nat1, revived(h.at(20))).until(22).owner(Nat1)
			return h.fault(FaultHardKill, Nat1, 10, 20).judge(40)
		}, []string{"I3"}},
		{"WrongKeyMemberTakesFromLiveOwner", func(h *history) *Judgement {
			h.until(5).host(Nat2, func(t *HostTruth) { t.OtherKey = true }).until(20).owner(Nat2)
			j := h.fault(FaultWrongKey, Nat2, 5, 40).judge(40)
			if len(j.Violations) == 0 || !strings.Contains(j.Violations[0].Detail, "another gossip key") {
				t.Errorf("the violation does not say the taker ran with another key: %+v", j.Violations)
			}
			return j
		}, []string{"I3"}},
		{"PartitionTakeoverFailbackAfterHeal", func(h *history) *Judgement {
			h.cur.DropIn = map[string]bool{Nat1: true, Nat2: true}
			h.until(11).owner(Nat2).until(20)
			h.cur.DropIn = map[string]bool{}
			h.until(27).owner(Nat1)
			return h.fault(FaultPartition, "", 10, 20).judge(40)
		}, nil},
		{"PartitionTakeBack", func(h *history) *Judgement {
			h.until(10)
			h.cur.DropIn = map[string]bool{Nat1: true, Nat2: true}
			h.until(11).owner(Nat2).until(13).owner(Nat1).until(20)
			h.cur.DropIn = map[string]bool{}
			return h.fault(FaultPartition, "", 10, 20).judge(40)
		}, []string{"I4"}},
		{"ThreeMovesForOneFault", func(h *history) *Judgement {
			h.until(10)
			h.cur.DropIn = map[string]bool{Nat2: true}
			h.until(11).owner(Nat2).until(17).owner(Nat1).until(19).owner(Nat2).until(40)
			h.cur.DropIn = map[string]bool{}
			return h.fault(FaultOneWay, Nat2, 10, 40).judge(50)
		}, []string{"I4"}},
		{"PublicInterfaceDownOwner", func(h *history) *Judgement {
			h.until(10).host(Nat1, func(t *HostTruth) { t.PublicUp = false }).until(12.5).owner(Nat2).until(20)
			h.host(Nat1, func(t *HostTruth) { t.PublicUp = true }).until(30).owner(Nat1)
			return h.fault(FaultPublicDown, Nat1, 10, 20).gap(10, 12.6).judge(40)
		}, nil},
		{"ClashTieWinnerThenRestore", func(h *history) *Judgement {
			// nat2's id sorts first: with nat1's priority it wins the tie.
			h.until(10).host(Nat2, func(t *HostTruth) { t.Priority, t.AgentStart = 200, h.at(10) }).until(16).owner(Nat2).until(25)
			h.host(Nat2, func(t *HostTruth) { t.Stopping = true }).until(25.3).owner(Nat1).until(26)
			h.host(Nat2, func(t *HostTruth) { t.Stopping, t.Priority, t.AgentStart = false, 100, h.at(26) })
			return h.fault(FaultClash, Nat2, 10, 26).judge(40)
		}, nil},
		{"OutageWithoutFault", func(h *history) *Judgement {
			return h.gap(10, 11.5).judge(20)
		}, []string{"I5"}},
		{"ShortGapsIgnored", func(h *history) *Judgement {
			return h.gap(10, 10.4).judge(20)
		}, nil},
		{"TakeoverHeldUpByEC2Fault", func(h *history) *Judgement {
			h.until(10).host(Nat1, dead).until(30).owner(Nat2)
			return h.fault(FaultHardKill, Nat1, 10, 40).fault(FaultEC25xx, "", 9, 20).gap(10, 30).judge(40)
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := tc.build(newHistory())
			var got []string
			for _, v := range j.Violations {
				if !slices.Contains(got, v.Invariant) {
					got = append(got, v.Invariant)
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				var b strings.Builder
				for _, v := range j.Violations {
					b.WriteString("\n  " + v.Invariant + ": " + v.Detail)
				}
				for _, m := range j.Moves {
					b.WriteString("\n  move " + m.From + " → " + m.To + ": " + m.Why)
				}
				t.Errorf("violations %v, want %v%s", got, tc.want, b.String())
			}
		})
	}
}

func TestJudge_CountsMovesPerFault(t *testing.T) {
	h := newHistory()
	h.until(10).host(Nat1, dead).until(11).owner(Nat2).until(20)
	h.host(Nat1, revived(h.at(20))).until(26).owner(Nat1)
	j := h.fault(FaultHardKill, Nat1, 10, 20).gap(10, 11.1).judge(40)
	if len(j.Moves) != 2 || !j.Moves[0].OK || !j.Moves[1].OK {
		t.Fatalf("moves %+v, want two justified", j.Moves)
	}
	fr := j.Faults[1]
	if fr.Moves != 2 || fr.MaxOutage != 1100*time.Millisecond || fr.Bound != 2700*time.Millisecond || fr.Base != 2700*time.Millisecond {
		t.Errorf("fault result %+v, want 2 moves, outage 1.1s, bound 2.7s", *fr)
	}
	h = newHistory()
	h.until(10).host(Nat1, dead).until(25).owner(Nat2)
	j = h.fault(FaultHardKill, Nat1, 10, 40).fault(FaultEC2Outage, "", 11, 20).judge(40)
	if fr := j.Faults[1]; fr.Base != 2700*time.Millisecond || fr.Bound != 30700*time.Millisecond {
		t.Errorf("hard kill under an EC2 outage: bound %s (base %s), want 30.7s (the outage's end + 18s + 2.7s) and 2.7s", fr.Bound, fr.Base)
	}
}

func TestBoundsFor_Defaults(t *testing.T) {
	b := BoundsFor(config.Default(), 5*time.Second)
	if b.Takeover != 2700*time.Millisecond || b.Datapath != 4700*time.Millisecond || b.EC2Recovery != 18*time.Second || b.StartupGrace != 10*time.Second {
		t.Errorf("bounds %+v: want takeover 2.7s, datapath 4.7s, EC2 recovery 18s, start-up grace 10s", b)
	}
}
