package lab

import (
	"fmt"
	"strings"
	"time"

	"github.com/natganker/natganker/config"
)

// What the chaos run's referee records and rules on: the kinds of fault, the truth about each
// host, the samples, the bounds, and the judgement (judge.go draws it).

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
// a few EC2 calls (0.2 s). That is 1.35 s with the fast profile; the bound is twice that, for
// a busy 2-core machine: 2.7 s. It holds for memberlist's path; the heartbeats' is faster.
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
