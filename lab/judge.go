package lab

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/natganker/natganker/config"
)

// The chaos run's referee judges a run from what it recorded: moto's EIP and routes, the
// state of each NAT as the chaos driver set it (links, agent process, its key and priority,
// nftables), the faults, and the client's replies. It never reads an agent's log or API.
// Judge is a pure function of that record, so that each invariant is table-tested.

// FaultKind names one kind of fault the chaos run injects.
type FaultKind string

// Fault kinds. Victim faults hit one NAT; partitions and loss sit between the NATs; EC2
// faults sit between the NATs and moto.
const (
	FaultHardKill    FaultKind = "hard-kill"         // links down + agent SIGKILL; revived later
	FaultAgentKill   FaultKind = "agent-kill"        // agent SIGKILL, datapath up; restarted later
	FaultSigterm     FaultKind = "sigterm"           // graceful stop; restarted later
	FaultMasquerade  FaultKind = "masquerade-delete" // the agent's nftables NAT table deleted
	FaultPublicDown  FaultKind = "public-if-down"    // pub0 down; up again later
	FaultWrongKey    FaultKind = "wrong-key"         // restarted with another gossip key, then normal
	FaultClash       FaultKind = "priority-clash"    // standby restarted with the owner's priority, then normal
	FaultPartition   FaultKind = "partition"         // the NATs drop each other's packets
	FaultOneWay      FaultKind = "one-way-partition" // one NAT drops its peer's packets
	FaultLoss        FaultKind = "loss"              // each NAT drops a share of its peer's packets
	FaultIMDSDown    FaultKind = "imds-down"         // the metadata mock stopped while the agent runs
	FaultEC2Latency  FaultKind = "ec2-latency"
	FaultEC25xx      FaultKind = "ec2-5xx"
	FaultEC2Throttle FaultKind = "ec2-throttle"
	FaultEC2Outage   FaultKind = "ec2-outage"
	FaultEC2Stale    FaultKind = "ec2-stale-reads"
)

// FaultKinds lists every kind in the order reports show them.
var FaultKinds = []FaultKind{FaultHardKill, FaultAgentKill, FaultSigterm, FaultMasquerade, FaultPublicDown,
	FaultWrongKey, FaultClash, FaultPartition, FaultOneWay, FaultLoss, FaultIMDSDown,
	FaultEC2Latency, FaultEC25xx, FaultEC2Throttle, FaultEC2Outage, FaultEC2Stale}

func (k FaultKind) victim() bool {
	switch k {
	case FaultHardKill, FaultAgentKill, FaultSigterm, FaultMasquerade, FaultPublicDown, FaultWrongKey, FaultClash:
		return true
	}
	return false
}

func (k FaultKind) partition() bool { return k == FaultPartition || k == FaultOneWay }

func (k FaultKind) ec2() bool {
	switch k {
	case FaultEC2Latency, FaultEC25xx, FaultEC2Throttle, FaultEC2Outage, FaultEC2Stale:
		return true
	}
	return false
}

// membership reports whether a fault of this kind may move the group: the chaos driver runs
// these one at a time.
func (k FaultKind) membership() bool { return k.victim() || k.partition() }

// datapath reports whether the fault breaks the victim's datapath rather than its agent.
func (k FaultKind) datapath() bool { return k == FaultMasquerade || k == FaultPublicDown }

// Fault is one injected fault.
type Fault struct {
	ID   int       `json:"id"`
	Kind FaultKind `json:"kind"`
	// Host is the NAT hit (for a one-way partition: the one that stops hearing its peer).
	Host string `json:"host,omitempty"`
	// Role is what Host was when the fault began: owner or standby.
	Role   string `json:"role,omitempty"`
	Detail string `json:"detail"`
	// Start is when the fault took effect; End when it was removed (the agent started
	// again, links up, rule deleted…). Zero End: still in effect when the record ended.
	Start time.Time `json:"-"`
	End   time.Time `json:"-"`
	Err   string    `json:"error,omitempty"`
}

// HostTruth is one NAT at one moment as the chaos driver set it, with its nftables state.
type HostTruth struct {
	LinksUp  bool `json:"links_up"`  // priv0 and pub0 up (down while hard-killed)
	PublicUp bool `json:"public_up"` // pub0 up
	Masq     bool `json:"masq"`      // nftables holds the agent's masquerade rule
	Agent    bool `json:"agent"`     // the agent process runs
	Stopping bool `json:"stopping"`  // SIGTERM sent, not exited yet
	OtherKey bool `json:"other_key"` // the agent runs with a gossip key of its own
	Priority int  `json:"priority"`  // the priority the agent was started with
	IMDS     bool `json:"imds"`      // its metadata mock runs
	// AgentStart is when the running agent was started.
	AgentStart time.Time `json:"-"`
}

// down reports an instance that cannot serve: dead, its agent gone or going.
func (h HostTruth) down() bool { return !h.LinksUp || !h.Agent || h.Stopping }

// broken reports a datapath that cannot carry NAT traffic.
func (h HostTruth) broken() bool { return !h.PublicUp || !h.Masq }

func (h HostTruth) impaired() bool { return h.down() || h.broken() }

// able reports a NAT that may take the group over: up, healthy, its agent running with the
// cluster's key.
func (h HostTruth) able() bool { return !h.impaired() && !h.OtherKey }

func (h HostTruth) describe() string {
	var out []string
	switch {
	case !h.LinksUp:
		out = append(out, "links down")
	case !h.Agent:
		out = append(out, "agent not running")
	case h.Stopping:
		out = append(out, "agent stopping (SIGTERM)")
	}
	if !h.PublicUp {
		out = append(out, "pub0 down")
	}
	if !h.Masq {
		out = append(out, "masquerade missing")
	}
	if h.OtherKey {
		out = append(out, "running with another gossip key")
	}
	if len(out) == 0 {
		return "up and healthy"
	}
	return strings.Join(out, ", ")
}

// Sample is what the referee saw at one moment.
type Sample struct {
	At time.Time
	// EIP is the host moto says holds the Elastic IP; Routes the host each managed route
	// table's default route targets ("" for none, a blackhole or an unknown target).
	EIP    string
	Routes []string
	Hosts  map[string]HostTruth
	// DropIn[h]: h drops every packet from its peer (one direction of a partition).
	DropIn map[string]bool
	// Stale: moto could not be read recently; EIP and Routes are the last known.
	Stale bool
}

// Owner is the host holding the EIP and every route, "" while they disagree.
func (s Sample) Owner() string {
	if s.EIP == "" {
		return ""
	}
	for _, r := range s.Routes {
		if r != s.EIP {
			return ""
		}
	}
	return s.EIP
}

func (s Sample) partitioned() bool { return s.DropIn[Nat1] || s.DropIn[Nat2] }

// references reports whether the EIP or a route points at host.
func (s Sample) references(host string) bool {
	if s.EIP == host {
		return true
	}
	for _, r := range s.Routes {
		if r == host {
			return true
		}
	}
	return false
}

func (s Sample) layout() string {
	return fmt.Sprintf("EIP → %s, routes → %s", orNone(s.EIP), strings.Join(mapStrings(s.Routes, orNone), ", "))
}

// Gap is a stretch without any reply to the client's probes.
type Gap struct {
	From, To time.Time
}

// Duration is the length of the gap.
func (g Gap) Duration() time.Duration { return g.To.Sub(g.From) }

// Bounds are the time limits the referee holds the pair to. Each follows from the agent's
// configuration and its documented rules (BoundsFor says how); none is tuned to a run.
type Bounds struct {
	// Takeover bounds detection + confirmation + claim after an owner dies, its agent dies
	// or stops.
	Takeover time.Duration `json:"takeover"`
	// Datapath bounds the same after the owner's datapath breaks: the next check, the check
	// itself, then a takeover.
	Datapath time.Duration `json:"datapath"`
	// Hysteresis is how long an agent stays unhealthy after its datapath is good again.
	Hysteresis time.Duration `json:"hysteresis"`
	// Split bounds how long the EIP and the routes may point at different instances during
	// one takeover.
	Split time.Duration `json:"split"`
	// EC2Recovery is how long after an EC2 fault ends a claim held up by it may still wait:
	// the agent's longest backoff between claims plus the SDK's between attempts.
	EC2Recovery time.Duration `json:"ec2_recovery"`
	// StartupGrace is how long a started agent waits for peers before it acts on an owner
	// it has never seen.
	StartupGrace time.Duration `json:"startup_grace"`
	// Rejoin is how often an agent re-joins peers missing from its view.
	Rejoin time.Duration `json:"rejoin"`
	// FailbackDelay is the configured failback delay.
	FailbackDelay time.Duration `json:"failback_delay"`
	// QuietGap: client gaps shorter than this are not outages.
	QuietGap time.Duration `json:"quiet_gap"`
	// Tolerance absorbs the sampling period and the stand-in's lag on timing claims.
	Tolerance time.Duration `json:"tolerance"`
}

// Agent constants the bounds rest on, restated from the agent's source as claims: the
// referee does not import the agent.
const (
	// agent/health.go healthyChecksToRecover.
	healthyChecks = 3
	// agent/claim.go: a failed claim is retried after 1, 2, 4, 8, then 16 s.
	maxClaimBackoff = 16 * time.Second
	// ec2/client.go maxBackoff: the SDK waits at most this long between attempts.
	maxSDKBackoff = 2 * time.Second
	// agent/datapath: one check waits at most this long (maxCheckWait).
	maxCheckWait = time.Second
)

// BoundsFor derives the referee's bounds from an agent configuration (defaults for every
// setting the lab does not write) and the failback delay the lab writes.
//
// Takeover: memberlist declares a silent peer dead after at most the wait for the next probe,
// one skipped round (two members), the probe itself and the suspicion time, (2 +
// suspicion_mult) × probe_interval; the confirming burst takes confirm_timeout; the claim is
// a few EC2 calls (0.2 s). That is 1.5 s with the fast profile; the bound is twice that, for a
// busy 2-core machine: 3 s.
func BoundsFor(cfg *config.Config, failbackDelay time.Duration) Bounds {
	g := cfg.Gossip
	detect := time.Duration(2+g.SuspicionMult)*g.ProbeInterval + g.ConfirmTimeout + 200*time.Millisecond
	takeover := 2 * detect
	check := cfg.Datapath.CheckInterval
	return Bounds{
		Takeover:      takeover,
		Datapath:      check + maxCheckWait + takeover,
		Hysteresis:    healthyChecks*check + maxCheckWait,
		Split:         2 * time.Second,
		EC2Recovery:   maxClaimBackoff + maxSDKBackoff,
		StartupGrace:  2 * g.RejoinInterval,
		Rejoin:        g.RejoinInterval,
		FailbackDelay: failbackDelay,
		QuietGap:      time.Second,
		Tolerance:     300 * time.Millisecond,
	}
}

// Move is one change of the converged owner in moto.
type Move struct {
	At    time.Time `json:"-"`
	From  string    `json:"from"`
	To    string    `json:"to"`
	Why   string    `json:"why"`
	Fault int       `json:"fault,omitempty"` // the fault it is counted against, 0 none
	OK    bool      `json:"justified"`
}

// Violation is one breach of an invariant.
type Violation struct {
	Invariant string    `json:"invariant"`
	At        time.Time `json:"-"`
	// AtS is At in seconds from the start of the fault phase (set by the report).
	AtS float64 `json:"at_s"`
	// From and To frame the timeline excerpt.
	From   time.Time `json:"-"`
	To     time.Time `json:"-"`
	Detail string    `json:"detail"`
	// Faults in effect around it.
	Faults  []int  `json:"faults,omitempty"`
	Excerpt string `json:"timeline_excerpt,omitempty"`
}

// FaultResult is what the referee found for one fault.
type FaultResult struct {
	// MaxOutage is the longest client gap overlapping the fault's window.
	MaxOutage time.Duration
	// Bound is the I5 bound for the fault (membership faults only); Base is what it would
	// be without the EC2 faults that stretched it.
	Bound, Base time.Duration
	// Moves counted against the fault.
	Moves int
	// Violations naming the fault.
	Violations int
}

// Judgement is the referee's verdict on one record.
type Judgement struct {
	Moves      []Move
	Violations []Violation
	Faults     map[int]*FaultResult
	// Inapplicable counts I2 episodes with no peer able to take over (nothing to demand).
	Inapplicable int
}

// Record is everything the referee judges.
type Record struct {
	Start, End time.Time
	Samples    []Sample
	Faults     []*Fault
	Gaps       []Gap
	// IDs maps each NAT to its instance id: ties of priority go to the lower id.
	IDs    map[string]string
	Bounds Bounds
	// Extra are violations found while the run went on (an agent that exited on its own):
	// Judge adds them to its own, naming the faults around them.
	Extra []Violation
}

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
