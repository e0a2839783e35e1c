package agent

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// splitSettle is how long EC2 must show a group's Elastic IP and routes on different
// instances before the desired owner repairs it: longer than one claim takes to move both,
// so that a takeover in progress is not mistaken for a split.
const splitSettle = time.Second

// Action is what the decision asks the agent to do for a group.
type Action int

// Actions.
const (
	// ActNone: leave EC2 as it is.
	ActNone Action = iota
	// ActClaim: point the group's EIP and routes at this node.
	ActClaim
	// ActConfirm: the owner looks gone; probe it directly before believing that.
	ActConfirm
	// ActRefuse: the operator asked for a takeover this node must not do; tell them why.
	ActRefuse
)

func (a Action) String() string {
	switch a {
	case ActClaim:
		return "claim"
	case ActConfirm:
		return "confirm"
	case ActRefuse:
		return "refuse"
	default:
		return "none"
	}
}

// Peer is one member as the decision sees it, for one group.
type Peer struct {
	Name string
	// Alive: memberlist currently considers it a live member.
	Alive bool
	// Left: it announced a graceful shutdown before going away.
	Left bool
	// Since is when it entered its current alive/dead state in this node's view.
	Since   time.Time
	Healthy bool
	Reason  string
	// InGroup: it serves this group (and its metadata could be read).
	InGroup  bool
	Priority int
	Yielded  bool
	Leaving  bool
	// Owns: it says it holds the group (its own read of EC2).
	Owns bool
	// Silent: alive to memberlist, but quiet, and a direct probe burst sent after its last
	// sign of life found nothing.
	Silent bool
	// NoRoom, when set, says why it cannot hold this group's Elastic IP: its interface has
	// too few private addresses for it beside the other groups' (addresses.go).
	NoRoom string
}

// Eligible reports whether the peer may own the group.
func (p Peer) Eligible() bool {
	return p.Alive && p.Healthy && p.InGroup && !p.Yielded && !p.Leaving && p.NoRoom == ""
}

// outranks reports whether p comes before q in the order of ownership.
func (p Peer) outranks(q Peer) bool {
	if p.Priority != q.Priority {
		return p.Priority > q.Priority
	}
	return p.Name < q.Name
}

// Route is one managed route as the decision sees it.
type Route struct {
	Table, Destination string
	// Target is the instance the route sends traffic to, "" when there is none (missing, or
	// another kind of target). A route through an interface that is not the one this
	// agent's targeting mode uses names that interface instead.
	Target string
	// State is active, blackhole or missing.
	State string
}

func (r Route) active() bool { return r.State == "active" && r.Target != "" }

func (r Route) String() string {
	if r.Target == "" {
		return fmt.Sprintf("%s %s is %s", r.Table, r.Destination, r.State)
	}
	return fmt.Sprintf("%s %s is %s via %s", r.Table, r.Destination, r.State, r.Target)
}

// View is everything one decision for one group depends on: a snapshot, no live state.
type View struct {
	Now  time.Time
	Self string
	// Peers holds every member this node knows, itself included.
	Peers map[string]Peer

	ManualFailback bool
	FailbackDelay  time.Duration

	// Observed is false until EC2 has been read once; nothing is decided before that.
	Observed bool
	// ObservedAt is when the EC2 read behind Owner and Routes was taken.
	ObservedAt time.Time
	// Owner is the instance EC2 says holds the group's Elastic IP ("" when unassociated).
	Owner string
	// OwnerRunning: EC2 reports the owner instance running (or its state is unknown).
	OwnerRunning bool
	// OwnerState is the owner instance's state as EC2 reported it.
	OwnerState string
	// OwnerSince is when this node first saw Owner hold the group.
	OwnerSince time.Time
	// Routes are the group's managed routes as EC2 reported them.
	Routes []Route
	// Misplaced, when set, says that the Elastic IP is on this node but on another of its
	// private addresses than the group's (ec2.Observation.Misplaced).
	Misplaced string
	// LayoutSince is since when EC2 has shown the Elastic IP and every route where they
	// point now.
	LayoutSince time.Time
	// SelfEligibleSince is when this node last became eligible without interruption.
	SelfEligibleSince time.Time
	// DisplacedBy names the instance that took the group from this node while this node
	// could not see it: a partition, not a death, as far as this node can tell.
	DisplacedBy string
	// OwnerConfirmedDead: a direct probe burst, sent after the owner was last seen
	// alive, got no answer and its gossip port was closed or unreachable.
	OwnerConfirmedDead bool
	// OwnerOtherKey: a recent burst found the owner's gossip port open but no answer to
	// probes sealed with this node's key. The owner is up; this node cannot read it.
	OwnerOtherKey bool
	// OwnerQuiet: the owner, alive as far as memberlist knows, has not shown a sign of life
	// for several probe intervals.
	OwnerQuiet bool
	// StartupGraceOver: long enough since start for peers to have been joined.
	StartupGraceOver bool
	// Forced: the operator asked this node to take the group now.
	Forced bool
}

// Verdict is the decision for one group.
type Verdict struct {
	Action Action
	// Desired is the member that should own the group ("" when none is eligible).
	Desired string
	// Reason explains the action, or why there is none, in words for the log.
	Reason string
	// RecheckAt, when set, is a time at which a fresh read of EC2 may change the decision.
	RecheckAt time.Time
}

// Desired returns the eligible member with the highest priority, ties broken by name.
func Desired(peers map[string]Peer) string {
	var best []Peer
	for _, p := range peers {
		if p.Eligible() {
			best = append(best, p)
		}
	}
	if len(best) == 0 {
		return ""
	}
	sort.Slice(best, func(i, j int) bool { return best[i].outranks(best[j]) })
	return best[0].Name
}

// Decide applies the ownership rules to one group. It only ever asks to point things at
// this node: releasing a group is done by advertising (yield, unhealthy, leaving) so that
// the peer that should own it takes it.
func Decide(v View) Verdict {
	// A peer that went quiet and then did not answer a burst sent after its last sign of
	// life is dead as far as this node can tell, whatever memberlist still says: the burst
	// is the referee either way, and memberlist's suspicion only adds time. Every rule of a
	// dead peer applies (a partition's included).
	ownerSilent, cloned := false, false
	for name, p := range v.Peers {
		if !p.Alive || !p.Silent || name == v.Self {
			continue
		}
		if !cloned {
			v.Peers, cloned = maps.Clone(v.Peers), true
		}
		p.Alive = false
		v.Peers[name] = p
		ownerSilent = ownerSilent || name == v.Owner
	}
	if ownerSilent {
		out := decide(v)
		if out.Action == ActClaim {
			out.Reason += ", ahead of gossip's verdict"
		}
		return out
	}
	out := decide(v)
	// While the owner is quiet and this node would replace it, probe it directly now.
	if out.Action == ActNone && quietLead(v) {
		out.Action = ActConfirm
		out.Reason = fmt.Sprintf("owner %s has been quiet: probing it directly ahead of gossip's verdict", v.Owner)
	}
	return out
}

func decide(v View) Verdict {
	if p, ok := v.Peers[v.Owner]; ok && p.Alive && v.Owner != v.Self && !v.OwnerRunning {
		// Its agent still gossips, but a stopped instance forwards nothing: it cannot own.
		v.Peers = maps.Clone(v.Peers)
		p.Healthy, p.Reason = false, "EC2 reports it "+v.OwnerState
		v.Peers[v.Owner] = p
	}
	desired := Desired(v.Peers)
	verdict := func(a Action, format string, args ...any) Verdict {
		return Verdict{Action: a, Desired: desired, Reason: fmt.Sprintf(format, args...)}
	}
	none := func(format string, args ...any) Verdict { return verdict(ActNone, format, args...) }
	claim := func(format string, args ...any) Verdict { return verdict(ActClaim, format, args...) }
	if !v.Observed {
		if v.Forced {
			return verdict(ActRefuse, "EC2 has not been read yet")
		}
		return none("waiting for the first read of EC2")
	}
	self := v.Peers[v.Self]
	if v.Forced {
		switch {
		case self.Leaving:
			return verdict(ActRefuse, "this node is shutting down")
		case !self.Healthy:
			return verdict(ActRefuse, "this node is unhealthy (%s)", self.Reason)
		}
		return claim("operator asked for a takeover")
	}
	if v.Owner == v.Self {
		if d := drifted(v); self.Eligible() && len(d) > 0 {
			return claim("repair: %s", strings.Join(d, "; "))
		}
		return none("this node owns the group")
	}
	if !self.Eligible() {
		return none("this node is not eligible (%s)", ineligibleReason(self))
	}
	if desired != v.Self {
		return none("%s should own the group", desired)
	}
	// This node should own the group and does not.
	if v.Owner == "" {
		return claim("the elastic IP is not associated")
	}
	owner, known := v.Peers[v.Owner]
	if known && owner.Alive {
		switch {
		case !owner.InGroup:
			return claim("owner %s does not serve this group", v.Owner)
		case owner.Leaving:
			return claim("owner %s is shutting down", v.Owner)
		case !owner.Healthy:
			return claim("owner %s is unhealthy: %s", v.Owner, owner.Reason)
		case owner.NoRoom != "":
			return claim("owner %s %s", v.Owner, owner.NoRoom)
		case owner.Yielded:
			return claim("owner %s yielded", v.Owner)
		}
		// A live, healthy owner with a lower priority: failback rules, unless the group is
		// split, which is drift to repair toward this node now, or the owner took it while
		// it could not see this node and still cannot (it repairs a split itself).
		if v.DisplacedBy == v.Owner {
			return none("%s took the group while it could not see this node and still cannot: failback waits until it can", v.Owner)
		}
		if v.ManualFailback {
			return none("failback is manual: %s keeps the group until it yields", v.Owner)
		}
		if others := splitTargets(v); len(others) > 0 {
			if settled := v.LayoutSince.Add(splitSettle); v.ObservedAt.Before(settled) {
				out := none("split: elastic IP on %s, routes on %s; repairing unless the next read shows it resolved", v.Owner, strings.Join(others, ", "))
				out.RecheckAt = settled
				return out
			}
			return claim("split: elastic IP on %s, routes on %s", v.Owner, strings.Join(others, ", "))
		}
		since := latest(v.SelfEligibleSince, v.OwnerSince, owner.Since)
		if wait := v.FailbackDelay - v.Now.Sub(since); wait > 0 {
			return none("failback from %s in %s", v.Owner, wait.Round(100*time.Millisecond))
		}
		return claim("failback from %s after %s", v.Owner, v.FailbackDelay)
	}
	if v.DisplacedBy == v.Owner && v.OwnerRunning {
		return none("%s took the group while unreachable from here and EC2 reports it running: not taking it back across a partition", v.Owner)
	}
	if known {
		switch {
		case owner.Left && v.OwnerConfirmedDead:
			return claim("owner %s left the cluster (confirmed by direct probes)", v.Owner)
		case v.OwnerConfirmedDead:
			return claim("owner %s is dead (confirmed by direct probes)", v.Owner)
		case v.OwnerOtherKey:
			return none("gossip lost owner %s but its gossip port is open and it does not answer probes sealed with this node's key: it is up, with another key or a stalled agent; not taking over", v.Owner)
		}
		if owner.Left {
			// A graceful leave is normally taken over while the owner still announces it
			// is leaving; a leave seen without that may be a replayed packet: probe first.
			return verdict(ActConfirm, "owner %s left the cluster", v.Owner)
		}
		return verdict(ActConfirm, "owner %s declared dead by gossip", v.Owner)
	}
	// The owner is an instance this node has never seen in the cluster.
	if !v.OwnerRunning {
		return claim("owner %s is not running", v.Owner)
	}
	if !v.StartupGraceOver {
		return none("waiting for peers before deciding about %s", v.Owner)
	}
	if v.OwnerOtherKey {
		return none("owner %s is not a member, but its gossip port is open and it does not answer probes sealed with this node's key: it runs with another gossip key; not taking over a running owner", v.Owner)
	}
	if v.OwnerConfirmedDead {
		return claim("owner %s is not a member and does not answer", v.Owner)
	}
	return verdict(ActConfirm, "owner %s is not a member", v.Owner)
}

// watched lists the peers this node pings with heartbeats for the group while it is
// eligible: a chain, so that a cluster of any size costs each node one heartbeat. The node
// that would replace the owner pings the owner (when it is another live member); every other
// eligible node pings the eligible peer just above it in the order of ownership, the owner
// left out: the one it would replace next. A peer found silent and dead is passed over, so
// that when it and the owner die together the next node moves up the chain at once.
func watched(v View) []string {
	self := v.Peers[v.Self]
	if !self.Eligible() {
		return nil
	}
	var next *Peer
	for name, p := range v.Peers {
		if name == v.Self || name == v.Owner || p.Silent || !p.Eligible() || !p.outranks(self) {
			continue
		}
		if next == nil || next.outranks(p) {
			p := p
			next = &p
		}
	}
	if next != nil {
		return []string{next.Name}
	}
	if o, ok := v.Peers[v.Owner]; ok && v.Owner != v.Self && o.Alive && !o.Silent {
		return []string{v.Owner}
	}
	return nil
}

// quietLead reports whether the owner, still alive to memberlist, has gone quiet while this
// node is the one that would replace it, and no burst has found it gone yet.
func quietLead(v View) bool {
	return v.OwnerQuiet && !v.OwnerConfirmedDead && successor(v)
}

// successor reports whether this node would replace the owner, alive to memberlist, if it
// died: the node that watches the owner with heartbeats.
func successor(v View) bool {
	if v.Owner == "" || v.Owner == v.Self {
		return false
	}
	if owner, ok := v.Peers[v.Owner]; !ok || !owner.Alive {
		return false
	}
	without := make(map[string]Peer, len(v.Peers))
	for name, p := range v.Peers {
		if name != v.Owner {
			without[name] = p
		}
	}
	return Desired(without) == v.Self
}

// drifted lists the managed routes the owner (this node) must point back at itself. A route
// on a live peer that says it owns the group, or that outranks this node and may take it
// (its claim moves the routes and the Elastic IP together), is that peer's to finish: not
// drift to fight over. With manual failback nobody takes the group back, so the owner keeps
// every route. A route on an instance not seen yet waits for the start-up grace.
func drifted(v View) []string {
	self := v.Peers[v.Self]
	var out []string
	if v.Misplaced != "" {
		out = append(out, v.Misplaced)
	}
	for _, r := range v.Routes {
		if r.active() && r.Target == v.Self {
			continue
		}
		if r.active() {
			p, ok := v.Peers[r.Target]
			if ok && p.Alive && (p.Owns || (!v.ManualFailback && p.Eligible() && p.outranks(self))) {
				continue
			}
			// Just after start a route may point at a peer that has not joined yet.
			if !ok && !v.StartupGraceOver {
				continue
			}
		}
		out = append(out, r.String())
	}
	return out
}

// splitTargets names the instances other than the Elastic IP's holder that managed routes
// send traffic to, sorted.
func splitTargets(v View) []string {
	var out []string
	for _, r := range v.Routes {
		if r.active() && r.Target != v.Owner && !slices.Contains(out, r.Target) {
			out = append(out, r.Target)
		}
	}
	sort.Strings(out)
	return out
}

func ineligibleReason(p Peer) string {
	switch {
	case p.Leaving:
		return "shutting down"
	case p.Yielded:
		return "yielded"
	case !p.InGroup:
		return "does not serve this group"
	case !p.Healthy:
		return "unhealthy: " + p.Reason
	case p.NoRoom != "":
		return p.NoRoom
	default:
		return "not alive"
	}
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}
