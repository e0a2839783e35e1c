package agent

import (
	"fmt"
	"sort"
	"time"
)

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
)

func (a Action) String() string {
	switch a {
	case ActClaim:
		return "claim"
	case ActConfirm:
		return "confirm"
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
}

// Eligible reports whether the peer may own the group.
func (p Peer) Eligible() bool {
	return p.Alive && p.Healthy && p.InGroup && !p.Yielded && !p.Leaving
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
	// Owner is the instance EC2 says holds the group's Elastic IP ("" when unassociated).
	Owner string
	// OwnerRunning: EC2 reports the owner instance running (or its state is unknown).
	OwnerRunning bool
	// OwnerSince is when this node first saw Owner hold the group.
	OwnerSince time.Time
	// Drift: this node owns the EIP but some managed route does not point at it.
	Drift       bool
	DriftReason string
	// SelfEligibleSince is when this node last became eligible without interruption.
	SelfEligibleSince time.Time
	// DisplacedBy names the instance that took the group from this node while this node
	// could not see it: a partition, not a death, as far as this node can tell.
	DisplacedBy string
	// OwnerConfirmedDead: a direct probe burst, sent after the owner was last seen
	// alive, got no answer.
	OwnerConfirmedDead bool
	// StartupGraceOver: long enough since start for peers to have been joined.
	StartupGraceOver bool
}

// Verdict is the decision for one group.
type Verdict struct {
	Action Action
	// Desired is the member that should own the group ("" when none is eligible).
	Desired string
	// Reason explains the action, or why there is none, in words for the log.
	Reason string
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
	sort.Slice(best, func(i, j int) bool {
		if best[i].Priority != best[j].Priority {
			return best[i].Priority > best[j].Priority
		}
		return best[i].Name < best[j].Name
	})
	return best[0].Name
}

// Decide applies the ownership rules to one group. It only ever asks to point things at
// this node: releasing a group is done by advertising (yield, unhealthy, leaving) so that
// the peer that should own it takes it.
func Decide(v View) Verdict {
	desired := Desired(v.Peers)
	none := func(format string, args ...any) Verdict {
		return Verdict{Action: ActNone, Desired: desired, Reason: fmt.Sprintf(format, args...)}
	}
	claim := func(format string, args ...any) Verdict {
		return Verdict{Action: ActClaim, Desired: desired, Reason: fmt.Sprintf(format, args...)}
	}
	if !v.Observed {
		return none("waiting for the first read of EC2")
	}
	self := v.Peers[v.Self]
	if v.Owner == v.Self {
		if self.Eligible() && v.Drift {
			return claim("repair: %s", v.DriftReason)
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
		case owner.Yielded:
			return claim("owner %s yielded", v.Owner)
		}
		// A live, healthy owner with a lower priority: failback rules.
		if v.ManualFailback {
			return none("failback is manual: %s keeps the group until it yields", v.Owner)
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
		if owner.Left {
			return claim("owner %s left the cluster", v.Owner)
		}
		if v.OwnerConfirmedDead {
			return claim("owner %s is dead (confirmed by direct probes)", v.Owner)
		}
		return Verdict{Action: ActConfirm, Desired: desired, Reason: fmt.Sprintf("owner %s declared dead by gossip", v.Owner)}
	}
	// The owner is an instance this node has never seen in the cluster.
	if !v.OwnerRunning {
		return claim("owner %s is not running", v.Owner)
	}
	if !v.StartupGraceOver {
		return none("waiting for peers before deciding about %s", v.Owner)
	}
	if v.OwnerConfirmedDead {
		return claim("owner %s is not a member and does not answer", v.Owner)
	}
	return Verdict{Action: ActConfirm, Desired: desired, Reason: fmt.Sprintf("owner %s is not a member", v.Owner)}
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
