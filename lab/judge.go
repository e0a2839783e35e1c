package lab

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// The chaos run's referee judges a run from what it recorded: moto's EIP and routes, the
// state of each NAT as the chaos driver set it (links, agent process, its key and priority,
// nftables), the faults, and the client's replies. It never reads an agent's log or API.
// Judge is a pure function of that record, so that each invariant is table-tested.

// judge holds the derived facts one Judge call works with.
type judge struct {
	r     Record
	b     Bounds
	out   *Judgement
	runs  []impairment // per host, in time order
	parts []impairment // partitions
}

// impairment is a stretch in which a host was impaired (or the NATs partitioned), and the
// window in which a move it causes may still land.
type impairment struct {
	host       string
	start, end time.Time
	down       bool // dead, agent gone or stopping (else: datapath broken)
	what       string
	window     time.Time
}

// Judge applies the invariants to a record.
func Judge(r Record) *Judgement {
	sort.SliceStable(r.Samples, func(i, j int) bool { return r.Samples[i].At.Before(r.Samples[j].At) })
	for _, f := range r.Faults {
		if f.End.IsZero() {
			f.End = r.End
		}
	}
	j := &judge{r: r, b: r.Bounds, out: &Judgement{Faults: map[int]*FaultResult{}}}
	for _, f := range r.Faults {
		j.out.Faults[f.ID] = &FaultResult{}
	}
	if len(r.Samples) == 0 {
		return j.out
	}
	j.impairments()
	j.moves()
	j.splits()
	j.stranded()
	j.outages()
	for _, v := range r.Extra {
		v.Faults = j.faultsAround(v.From, v.To, 0)
		j.out.Violations = append(j.out.Violations, v)
	}
	sort.SliceStable(j.out.Violations, func(a, b int) bool { return j.out.Violations[a].At.Before(j.out.Violations[b].At) })
	for _, v := range j.out.Violations {
		for _, id := range v.Faults {
			j.out.Faults[id].Violations++
		}
	}
	return j.out
}

// sampleEnd is the end of the stretch sample i stands for.
func (j *judge) sampleEnd(i int) time.Time {
	if i+1 < len(j.r.Samples) {
		return j.r.Samples[i+1].At
	}
	return j.r.End
}

// extendEC2 pushes until later by every EC2 fault overlapping [from, until]: a claim held up
// by it may land EC2Recovery + tail after it ends.
func (j *judge) extendEC2(from, until time.Time, tail time.Duration) time.Time {
	for changed := true; changed; {
		changed = false
		for _, f := range j.r.Faults {
			if !f.Kind.ec2() || f.Start.After(until) || f.End.Before(from) {
				continue
			}
			if e := f.End.Add(j.b.EC2Recovery + tail); e.After(until) {
				until, changed = e, true
			}
		}
	}
	return until
}

// impairments finds, per host, the stretches in which it was impaired, and the partitions.
func (j *judge) impairments() {
	for _, h := range []string{Nat1, Nat2} {
		var cur *impairment
		for i, s := range j.r.Samples {
			ht := s.Hosts[h]
			if ht.impaired() {
				if cur == nil {
					cur = &impairment{host: h, start: s.At, what: ht.describe()}
				}
				cur.down = cur.down || ht.down()
				cur.end = j.sampleEnd(i)
				continue
			}
			if cur != nil {
				j.runs = append(j.runs, *cur)
				cur = nil
			}
		}
		if cur != nil {
			j.runs = append(j.runs, *cur)
		}
	}
	var cur *impairment
	for i, s := range j.r.Samples {
		if s.partitioned() {
			if cur == nil {
				what := "partition between the NATs"
				if !(s.DropIn[Nat1] && s.DropIn[Nat2]) {
					what = "one-way partition"
				}
				cur = &impairment{start: s.At, what: what}
			}
			cur.end = j.sampleEnd(i)
			continue
		}
		if cur != nil {
			j.parts = append(j.parts, *cur)
			cur = nil
		}
	}
	if cur != nil {
		j.parts = append(j.parts, *cur)
	}
	for i := range j.runs {
		r := &j.runs[i]
		tail := j.b.Takeover
		if !r.down {
			tail = j.b.Datapath + j.b.Hysteresis
		}
		r.window = j.extendEC2(r.start, r.end.Add(tail), j.b.Takeover)
	}
	for i := range j.parts {
		p := &j.parts[i]
		p.window = j.extendEC2(p.start, p.end.Add(j.b.Takeover), j.b.Takeover)
	}
}

// index returns the index of the last sample at or before t (0 when none).
func (j *judge) index(t time.Time) int {
	i := sort.Search(len(j.r.Samples), func(i int) bool { return j.r.Samples[i].At.After(t) })
	return max(i-1, 0)
}

// attrEnd is the end of the window in which a move or a client gap is put down to f: its
// recovery, a rejoin, the failback delay and one takeover after it was removed.
func (j *judge) attrEnd(f *Fault) time.Time {
	tail := j.b.StartupGrace + j.b.FailbackDelay + j.b.Takeover
	if f.Kind.datapath() {
		tail += j.b.Hysteresis
	}
	return j.extendEC2(f.Start, f.End.Add(tail), j.b.Takeover)
}

// faultAt returns the latest-started membership fault whose window holds t.
func (j *judge) faultAt(t time.Time) *Fault {
	var best *Fault
	for _, f := range j.r.Faults {
		if !f.Kind.membership() || f.Start.After(t.Add(j.b.Tolerance)) || j.attrEnd(f).Before(t) {
			continue
		}
		if best == nil || f.Start.After(best.Start) {
			best = f
		}
	}
	return best
}

// faultsAround lists the faults in effect during [from, to], or removed less than one
// takeover before it, and also (when not 0) the fault a move was counted against.
func (j *judge) faultsAround(from, to time.Time, also int) []int {
	var ids []int
	for _, f := range j.r.Faults {
		if (!f.Start.After(to) && !f.End.Add(j.b.Takeover).Before(from)) || f.ID == also {
			ids = append(ids, f.ID)
		}
	}
	return ids
}

// recently says what was wrong with host in the takeover time before sample i, if
// anything: the state a decision that moved the group at i may have been taken in.
func (j *judge) recently(host string, i int) string {
	t := j.r.Samples[i].At.Add(-j.b.Takeover)
	for k := i; k >= 0 && !j.r.Samples[k].At.Before(t); k-- {
		if ht := j.r.Samples[k].Hosts[host]; ht.impaired() || ht.OtherKey {
			return fmt.Sprintf(" (%s: %s at %+.1fs)", host, ht.describe(), j.r.Samples[k].At.Sub(j.r.Start).Seconds())
		}
	}
	return ""
}

// outranks reports whether a is ahead of b in the order of ownership at sample s: higher
// configured priority, ties to the lower instance id.
func (j *judge) outranks(a, b string, s Sample) bool {
	pa, pb := s.Hosts[a].Priority, s.Hosts[b].Priority
	if pa != pb {
		return pa > pb
	}
	return j.r.IDs[a] < j.r.IDs[b]
}

// ableSince returns when host's current stretch of being able began, as of sample i, and
// false when it is not able at i.
func (j *judge) ableSince(host string, i int) (time.Time, bool) {
	if !j.r.Samples[i].Hosts[host].able() {
		return time.Time{}, false
	}
	k := i
	for k > 0 && j.r.Samples[k-1].Hosts[host].able() {
		k--
	}
	if k == 0 {
		return j.r.Start, true
	}
	return j.r.Samples[k].At, true
}

// moves finds the changes of owner and judges each: I3 (justified) and I4 (per fault, at
// most one move away and one failback; none back across a two-way partition).
func (j *judge) moves() {
	cur, curSince, curFault := "", j.r.Start, 0
	perFault := map[int][]Move{}
	for i, s := range j.r.Samples {
		o := s.Owner()
		if o == "" || s.Stale {
			continue
		}
		if cur == "" {
			cur = o
			continue
		}
		if o == cur {
			continue
		}
		m := Move{At: s.At, From: cur, To: o}
		m.OK, m.Why, m.Fault = j.justify(m, i, curSince, curFault)
		j.out.Moves = append(j.out.Moves, m)
		if !m.OK {
			j.out.Violations = append(j.out.Violations, Violation{Invariant: "I3", At: m.At,
				From: m.At.Add(-2 * j.b.Takeover), To: m.At,
				Detail: fmt.Sprintf("false failover: group moved %s → %s while %s was %s: %s%s", m.From, m.To, m.From,
					s.Hosts[m.From].describe(), m.Why, j.recently(m.To, i)),
				Faults: j.faultsAround(m.At.Add(-j.b.Takeover), m.At, m.Fault)})
		}
		if m.Fault != 0 {
			j.out.Faults[m.Fault].Moves++
			prev := perFault[m.Fault]
			perFault[m.Fault] = append(prev, m)
			f := j.fault(m.Fault)
			switch {
			case len(prev) >= 2:
				j.out.Violations = append(j.out.Violations, Violation{Invariant: "I4", At: m.At,
					From: prev[0].At.Add(-j.b.Takeover), To: m.At,
					Detail: fmt.Sprintf("ping-pong: move %d for fault #%d (%s): %s → %s, after %s", len(prev)+1, f.ID, f.Kind,
						m.From, m.To, movesText(prev, j.r.Start)),
					Faults: []int{f.ID}})
			case len(prev) == 1 && f.Kind == FaultPartition && m.At.Before(f.End):
				j.out.Violations = append(j.out.Violations, Violation{Invariant: "I4", At: m.At,
					From: prev[0].At.Add(-j.b.Takeover), To: m.At,
					Detail: fmt.Sprintf("%s took the group back from %s across the partition (fault #%d), %.1fs before it healed",
						m.To, m.From, f.ID, f.End.Sub(m.At).Seconds()),
					Faults: []int{f.ID}})
			}
		}
		cur, curSince, curFault = o, s.At, m.Fault
	}
}

func (j *judge) fault(id int) *Fault {
	for _, f := range j.r.Faults {
		if f.ID == id {
			return f
		}
	}
	return nil
}

// justify says whether move m (seen at sample i) is allowed, why, and which fault it is
// counted against. A move to a member that outranks the owner is a failback, allowed once
// that member has been able for the failback delay, counted from when it became able and
// from when the owner took the group. Any other move away from an owner is allowed while the
// owner is impaired or the NATs are partitioned, and within the window a takeover it caused
// may take to land (the latest such stretch explains it).
func (j *judge) justify(m Move, i int, ownerSince time.Time, ownerFault int) (bool, string, int) {
	attributed := func(dflt int) int {
		if f := j.faultAt(m.At); f != nil {
			return f.ID
		}
		return dflt
	}
	s := j.r.Samples[i]
	why := ""
	if j.outranks(m.To, m.From, s) {
		since, ok := j.ableSince(m.To, i)
		if !ok {
			why = fmt.Sprintf("%s is not able to own the group (%s)", m.To, s.Hosts[m.To].describe())
		} else {
			from := latestOf(since, ownerSince)
			if wait := from.Add(j.b.FailbackDelay - j.b.Tolerance); !m.At.Before(wait) {
				return true, fmt.Sprintf("failback: %s outranks %s and has been able for %.1fs", m.To, m.From, m.At.Sub(from).Seconds()), attributed(ownerFault)
			}
			why = fmt.Sprintf("failback to %s %.1fs after it could (able since %+.1fs, %s owner since %+.1fs), before the failback delay of %s",
				m.To, m.At.Sub(from).Seconds(), since.Sub(j.r.Start).Seconds(), m.From, ownerSince.Sub(j.r.Start).Seconds(), j.b.FailbackDelay)
		}
	} else {
		why = fmt.Sprintf("%s does not outrank %s (priorities %d and %d)", m.To, m.From, s.Hosts[m.To].Priority, s.Hosts[m.From].Priority)
	}
	var cause *impairment
	for k := range j.runs {
		r := &j.runs[k]
		if r.host == m.From && !r.start.After(m.At) && !r.window.Before(m.At) && (cause == nil || r.start.After(cause.start)) {
			cause = r
		}
	}
	for k := range j.parts {
		p := &j.parts[k]
		if !p.start.After(m.At) && !p.window.Before(m.At) && (cause == nil || p.start.After(cause.start)) {
			cause = p
		}
	}
	if cause != nil {
		what := cause.what
		if cause.host != "" {
			what = fmt.Sprintf("%s impaired (%s)", cause.host, cause.what)
		}
		return true, fmt.Sprintf("%s since %+.1fs", what, cause.start.Sub(j.r.Start).Seconds()), attributed(ownerFault)
	}
	return false, why + fmt.Sprintf("; %s neither impaired nor cut off from %s", m.From, m.To), attributed(ownerFault)
}

// splits checks I1: the EIP and every route point at one instance, except during one
// takeover (longer while an EC2 fault holds claims up).
func (j *judge) splits() {
	var start time.Time
	var first Sample
	in := false
	check := func(end time.Time) {
		deadline := j.extendEC2(start, start.Add(j.b.Split), j.b.Split)
		if end.After(deadline) {
			j.out.Violations = append(j.out.Violations, Violation{Invariant: "I1", At: deadline,
				From: start, To: deadline,
				Detail: fmt.Sprintf("EIP and routes disagree for %.1fs (bound %.1fs): %s", end.Sub(start).Seconds(),
					deadline.Sub(start).Seconds(), first.layout()),
				Faults: j.faultsAround(start, deadline, 0)})
		}
	}
	for _, s := range j.r.Samples {
		if s.Stale {
			continue
		}
		if s.Owner() == "" {
			if !in {
				in, start, first = true, s.At, s
			}
			continue
		}
		if in {
			in = false
			check(s.At)
		}
	}
	if in {
		check(j.r.End)
	}
}

// readyAt is when host is ready to take over from a peer that fails at t, judged from the
// samples up to end: able without a break, its agent past its start-up grace (it acts on an
// owner it has not seen only then) and its datapath past the hysteresis. The second result
// is false when host does not stay able until end.
func (j *judge) readyAt(host string, t, end time.Time) (time.Time, bool) {
	ie := j.index(end)
	since, ok := j.ableSince(host, ie)
	if !ok {
		return time.Time{}, false
	}
	ready := since
	if st := j.r.Samples[ie].Hosts[host].AgentStart; !st.IsZero() {
		ready = latestOf(ready, st.Add(j.b.StartupGrace))
	}
	for k := ie; k >= 0 && !j.r.Samples[k].At.Before(t.Add(-j.b.Hysteresis)); k-- {
		if j.r.Samples[k].Hosts[host].broken() {
			ready = latestOf(ready, j.r.Samples[k].At.Add(j.b.Hysteresis))
			break
		}
	}
	return ready, true
}

// stranded checks I2: nothing points at an impaired instance for longer than the takeover
// bound after the impairment began, when the peer is able to take over.
func (j *judge) stranded() {
	for _, r := range j.runs {
		// The stretches of r in which something still pointed at the host.
		refd := false
		flush := func(refEnd time.Time) {
			refd = false
			peer := Peer(r.host)
			// A member that took the group across a partition keeps it while it runs and stays
			// unseen (design rule 5): nothing is demanded of the peer until it saw it again.
			for _, p := range j.parts {
				if !p.start.After(refEnd) && !p.end.Add(j.b.Rejoin+j.b.Takeover).Before(r.start) {
					j.out.Inapplicable++
					return
				}
			}
			ready, ok := j.readyAt(peer, r.start, refEnd)
			if !ok {
				j.out.Inapplicable++
				return
			}
			base := j.b.Takeover
			if !r.down {
				base = j.b.Datapath
			}
			from := latestOf(r.start, ready)
			deadline := j.extendEC2(r.start, from.Add(base), j.b.Takeover)
			if refEnd.After(deadline) {
				s := j.r.Samples[j.index(deadline)]
				j.out.Violations = append(j.out.Violations, Violation{Invariant: "I2", At: deadline,
					From: r.start, To: deadline,
					Detail: fmt.Sprintf("%s: still on %s (%s since %+.1fs) at the bound, %.1fs later (%s ready to take over since %+.1fs)",
						s.layout(), r.host, r.what, r.start.Sub(j.r.Start).Seconds(), deadline.Sub(r.start).Seconds(),
						peer, ready.Sub(j.r.Start).Seconds()),
					Faults: j.faultsAround(r.start, deadline, 0)})
			}
		}
		for i := j.index(r.start); i < len(j.r.Samples); i++ {
			s := j.r.Samples[i]
			if s.At.Before(r.start) {
				continue
			}
			if !s.At.Before(r.end) {
				break
			}
			if s.Stale {
				continue
			}
			if s.references(r.host) {
				refd = true
				continue
			}
			if refd {
				flush(s.At)
			}
		}
		if refd {
			flush(r.end)
		}
	}
}

// bound5 is the longest client outage allowed for a membership fault: the takeover bound
// (the datapath bound for a broken datapath) from the moment the peer was ready, stretched by
// EC2 faults in its window.
func (j *judge) bound5(f *Fault) (bound, base time.Duration) {
	base = j.b.Takeover
	if f.Kind.datapath() {
		base = j.b.Datapath
	}
	start := f.Start
	if f.Kind.victim() && f.Host != "" {
		if ready, ok := j.readyAt(Peer(f.Host), f.Start, f.Start); ok && ready.After(start) {
			start = ready
		}
	}
	base = start.Add(base).Sub(f.Start)
	return j.extendEC2(f.Start, f.Start.Add(base), j.b.Takeover).Sub(f.Start), base
}

// outages checks I5: every client gap of QuietGap or more falls within a membership fault's
// window and is no longer than that fault's bound; and records each fault's longest gap.
func (j *judge) outages() {
	for _, f := range j.r.Faults {
		fr := j.out.Faults[f.ID]
		end := f.End.Add(j.b.Takeover)
		if f.Kind.membership() {
			end = j.attrEnd(f)
			fr.Bound, fr.Base = j.bound5(f)
		}
		for _, g := range j.r.Gaps {
			if !g.From.After(end) && !g.To.Before(f.Start) && g.Duration() > fr.MaxOutage {
				fr.MaxOutage = g.Duration()
			}
		}
	}
	for _, g := range j.r.Gaps {
		if g.Duration() < j.b.QuietGap {
			continue
		}
		var allowed time.Duration
		var by []string
		for _, f := range j.r.Faults {
			if !f.Kind.membership() || g.From.After(j.attrEnd(f)) || g.To.Before(f.Start) {
				continue
			}
			by = append(by, fmt.Sprintf("#%d %s", f.ID, f.Kind))
			allowed = max(allowed, j.out.Faults[f.ID].Bound)
		}
		if len(by) > 0 {
			// A move the fault causes later (its failback) may be held up by an EC2 fault
			// in the middle of it.
			allowed = max(allowed, j.extendEC2(g.From, g.From.Add(j.b.Takeover), j.b.Takeover).Sub(g.From))
		}
		if g.Duration() <= allowed {
			continue
		}
		why := "with no fault that moves the group in effect"
		if len(by) > 0 {
			why = fmt.Sprintf("bound %.1fs for %s", allowed.Seconds(), strings.Join(by, ", "))
		}
		j.out.Violations = append(j.out.Violations, Violation{Invariant: "I5", At: g.To, From: g.From, To: g.To,
			Detail: fmt.Sprintf("client outage of %.2fs from %+.2fs, %s", g.Duration().Seconds(), g.From.Sub(j.r.Start).Seconds(), why),
			Faults: j.faultsAround(g.From, g.To, 0)})
	}
}

func movesText(ms []Move, zero time.Time) string {
	var out []string
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s → %s at %+.1fs", m.From, m.To, m.At.Sub(zero).Seconds()))
	}
	return strings.Join(out, ", ")
}

func latestOf(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func mapStrings(ss []string, f func(string) string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}
