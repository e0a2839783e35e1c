package agent

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

// Events are the one seam through which what happens in the agent reaches metrics and hooks.
// The run goroutine emits them: ownership, membership and health changes are found by
// comparing the loop's state after each round with what was last announced (noteChanges),
// so that every path that changes them is covered and each change is announced once;
// finished claims and bursts are announced where their results arrive.

// EventKind says what an Event is about.
type EventKind string

// Kinds of Event.
const (
	// EventAcquire: this node became the owner of Group (EC2 shows it holding the Elastic
	// IP). Takeover carries the timings when this node's own takeover did it.
	EventAcquire EventKind = "acquire"
	// EventRelease: this node no longer owns Group; To is the new owner ("" when none).
	EventRelease EventKind = "release"
	// EventMember: a peer joined, left, died or changed health.
	EventMember EventKind = "member"
	// EventHealth: this node's own health changed (also sent once at start).
	EventHealth EventKind = "health"
	// EventClaim: a claim of Group by this node finished: a takeover, a drift repair, or a
	// failure (Err set).
	EventClaim EventKind = "claim"
	// EventBurst: a confirmation burst of direct probes at Member finished.
	EventBurst EventKind = "burst"
)

// Burst outcomes (Event.Outcome).
const (
	// BurstAnswered: the peer answered a probe or its gossip port accepted: it is up.
	BurstAnswered = "answered"
	// BurstOtherKey: the gossip port accepted but no probe was answered: another key.
	BurstOtherKey = "other_key"
	// BurstUnreachable: nothing answered: the peer is gone.
	BurstUnreachable = "unreachable"
	// BurstError: the burst could not be sent.
	BurstError = "error"
)

// Event is one thing that happened in the agent. Which fields are set depends on Kind.
type Event struct {
	Kind EventKind
	At   time.Time

	// Group is the group of acquire, release and claim events.
	Group string
	// From and To are the owner before and after (acquire, release, claim).
	From, To string
	// Reason says why, in words for a person.
	Reason string
	// Cause is a short, fixed word for Reason, fit for a metric label: for claims
	// "owner_dead", "failback", "repair"… (see takeoverCause); for releases "shutdown",
	// "yielded", "unhealthy", "taken"; for acquires "takeover", "start", "ec2".
	Cause string
	// Takeover is the claim's report (claim events, and acquire events that a takeover
	// caused): timings, and Error when it failed.
	Takeover *TakeoverView
	// Repair: the claim only put drifted routes back on this node, which already owned the
	// group.
	Repair bool

	// Member is the peer of member and burst events; State its state ("alive", "dead",
	// "left"; "" when it is no longer listed at all); Healthy whether it (or, for health
	// events, this node) may own groups, and Reason why not.
	Member  string
	State   string
	Healthy bool
	// DatapathHealthy is, for health events, the datapath checks' verdict alone.
	DatapathHealthy bool

	// Outcome and Took describe a burst (BurstAnswered, BurstOtherKey, BurstUnreachable or
	// BurstError).
	Outcome string
	Took    time.Duration
}

// EventSink receives the agent's events. Event is called on the agent's run goroutine: it
// must return at once (count, or queue without blocking), and must not call the agent.
type EventSink interface {
	Event(Event)
}

// sinkLifecycle is implemented by sinks that run something (an HTTP server, hook
// processes): the agent starts them before it joins the cluster, so that a failure to
// start stops the start-up, and closes them once it has stopped.
type sinkLifecycle interface {
	Start(ctx context.Context) error
	Close() error
}

// startSinks starts the sinks that need it; on a failure it closes those it started.
func (a *Agent) startSinks(ctx context.Context) error {
	for i, s := range a.deps.Events {
		l, ok := s.(sinkLifecycle)
		if !ok {
			continue
		}
		if err := l.Start(ctx); err != nil {
			a.closeSinks(a.deps.Events[:i])
			return err
		}
	}
	return nil
}

// closeSinks closes the sinks that were started.
func (a *Agent) closeSinks(sinks []EventSink) error {
	var errs []error
	for _, s := range sinks {
		if l, ok := s.(sinkLifecycle); ok {
			errs = append(errs, l.Close())
		}
	}
	return errors.Join(errs...)
}

// announced is what the events sent so far have told the sinks; the run goroutine owns it.
type announced struct {
	healthSent bool
	// owners maps a group to its owner as last announced, for this node's acquire/release.
	owners map[string]string
	// takeovers holds, per group, a successful takeover whose acquire is not announced yet.
	takeovers map[string]*TakeoverView
	members   map[string]memberNote
	health    healthNote
}

type memberNote struct {
	state   gossip.State
	healthy bool
}

type healthNote struct {
	healthy, datapath bool
	reason            string
}

func (n *announced) init() *announced {
	if n.owners == nil {
		n.owners = make(map[string]string)
		n.takeovers = make(map[string]*TakeoverView)
		n.members = make(map[string]memberNote)
	}
	return n
}

// emit hands e to every sink.
func (a *Agent) emit(e Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	for _, s := range a.deps.Events {
		s.Event(e)
	}
}

// noteChanges announces what changed since the last round: ownership of each group, peers
// and this node's health. The run loop calls it after every decision round.
func (a *Agent) noteChanges() {
	n := a.notes.init()
	for _, g := range a.groups {
		a.noteOwner(g)
	}
	a.noteMembers()
	healthy, reason := a.healthy()
	h := healthNote{healthy: healthy, datapath: a.health.healthy, reason: reason}
	if !n.healthSent || h != n.health {
		n.health, n.healthSent = h, true
		a.emit(Event{Kind: EventHealth, Healthy: h.healthy, DatapathHealthy: h.datapath, Reason: h.reason})
	}
}

// noteOwner announces this node acquiring or releasing g.
func (a *Agent) noteOwner(g *groupState) {
	n := a.notes.init()
	self := a.id.InstanceID
	name := g.cfg.Name
	prev, known := n.owners[name]
	if known && prev == g.owner {
		delete(n.takeovers, name)
		return
	}
	// Before the first read nothing is known; while a claim runs, a read showing this node
	// already may come first: the claim's result, with its timings, announces it.
	if !g.observed || (g.owner == self && g.claiming) {
		return
	}
	n.owners[name] = g.owner
	switch {
	case g.owner == self && prev != self:
		e := Event{Kind: EventAcquire, Group: name, From: prev, To: self}
		if tv := n.takeovers[name]; tv != nil {
			e.From, e.Reason, e.Cause, e.Takeover = tv.From, tv.Reason, "takeover", tv
		} else if !known {
			e.Reason, e.Cause = "this node held the group when the agent started", "start"
		} else {
			e.Reason, e.Cause = "EC2 shows this node holding the elastic IP", "ec2"
		}
		a.emit(e)
	case prev == self && g.owner != self:
		e := Event{Kind: EventRelease, Group: name, From: self, To: g.owner}
		healthy, why := a.healthy()
		switch {
		case a.leave != nil:
			e.Reason, e.Cause = "handed over: this node is shutting down", "shutdown"
		case g.yielded:
			e.Reason, e.Cause = "handed over: this node yielded the group", "yielded"
		case !healthy:
			e.Reason, e.Cause = "handed over: this node is unhealthy ("+why+")", "unhealthy"
		case g.owner == "":
			e.Reason, e.Cause = "EC2 shows the elastic IP not associated", "taken"
		default:
			e.Reason, e.Cause = "EC2 shows "+g.owner+" holding the elastic IP", "taken"
		}
		a.emit(e)
	}
	delete(n.takeovers, name)
}

// noteMembers announces peers that joined, left, died or changed health.
func (a *Agent) noteMembers() {
	n := a.notes.init()
	for name, m := range a.members {
		note := memberNote{state: m.State, healthy: m.MetaErr == "" && m.Meta.Healthy}
		if prev, ok := n.members[name]; ok && prev == note {
			continue
		}
		n.members[name] = note
		reason := m.Meta.Reason
		if m.MetaErr != "" {
			reason = "unreadable metadata: " + m.MetaErr
		}
		if note.healthy {
			reason = ""
		}
		a.emit(Event{Kind: EventMember, Member: name, State: string(m.State), Healthy: note.healthy, Reason: reason})
	}
	for name := range n.members {
		if _, ok := a.members[name]; !ok {
			delete(n.members, name)
			a.emit(Event{Kind: EventMember, Member: name})
		}
	}
}

// claimFinished announces a finished claim; a successful takeover is kept for the acquire
// event that follows once the loop's state shows this node as the owner.
func (a *Agent) claimFinished(r claimResult, v TakeoverView) {
	e := Event{Kind: EventClaim, Group: v.Group, From: v.From, To: v.To, Reason: v.Reason,
		Cause: takeoverCause(v.Reason), Takeover: &v,
		Repair: r.err == nil && r.from == a.id.InstanceID && r.report.EIP.Action != ec2.ActionAssociated}
	if r.err == nil && r.from != a.id.InstanceID {
		a.notes.init().takeovers[v.Group] = &v
	}
	a.emit(e)
}

// burstFinished announces a finished confirmation burst.
func (a *Agent) burstFinished(r confirmResult) {
	e := Event{Kind: EventBurst, Member: r.name, Took: r.probe.Took}
	switch {
	case r.err != nil:
		e.Outcome, e.Reason = BurstError, r.err.Error()
	case r.probe.KeyMismatch():
		e.Outcome = BurstOtherKey
	case r.probe.Alive():
		e.Outcome = BurstAnswered
	default:
		e.Outcome = BurstUnreachable
	}
	a.emit(e)
}

// takeoverCause turns the reason Decide gave for a claim into a fixed word, for a metric
// label: reasons name instances, a label must not. A reason not listed here is "other" (a
// test runs every claim rule of Decide through it, so that none is).
func takeoverCause(reason string) string {
	switch {
	case strings.HasPrefix(reason, "operator asked"):
		return "operator"
	case strings.HasPrefix(reason, "repair:"):
		return "repair"
	case strings.HasPrefix(reason, "the elastic IP is not associated"):
		return "unassociated"
	case strings.HasPrefix(reason, "split:"):
		return "split"
	case strings.HasPrefix(reason, "failback from "):
		return "failback"
	}
	rest, ok := strings.CutPrefix(reason, "owner ")
	if !ok {
		return "other"
	}
	// Past the owner's name.
	if _, after, ok := strings.Cut(rest, " "); ok {
		rest = after
	}
	for _, c := range []struct{ prefix, cause string }{
		{"does not serve this group", "owner_not_in_group"},
		{"is shutting down", "owner_leaving"},
		{"is unhealthy", "owner_unhealthy"},
		{"yielded", "owner_yielded"},
		{"left the cluster", "owner_left"},
		{"is dead", "owner_dead"},
		{"is not running", "owner_not_running"},
		{"is not a member", "owner_unknown_dead"},
	} {
		if strings.HasPrefix(rest, c.prefix) {
			return c.cause
		}
	}
	return "other"
}
