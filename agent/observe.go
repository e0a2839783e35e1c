package agent

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

// groupState is what the run loop knows about one group.
type groupState struct {
	cfg config.Group

	// The latest read of EC2.
	obs       ec2.Observation
	obsErr    error
	observed  bool
	observing bool
	fresh     bool
	// failedAt is when the latest read failed: while EC2 cannot be read it is read again
	// every unreadableRetry rather than every reconcile_interval.
	failedAt time.Time
	// claimedAt is when this node's latest claim succeeded (EC2 showed everything on this
	// node) and beforeClaim where things pointed by the read it started from; rereadAt, when
	// set, is when to read again a read that looked stale.
	claimedAt   time.Time
	beforeClaim map[string]string
	rereadAt    time.Time
	// owner holds the Elastic IP, as EC2 said; ownerAt is when this node first saw that.
	owner   string
	ownerAt time.Time
	// layout is where the Elastic IP and routes pointed at the latest read, and layoutAt
	// since when they have pointed there.
	layout   string
	layoutAt time.Time

	// displacedBy names the peer that took the group from this node while this node could
	// not see it, or while it could not see this node (it says so: GroupMeta.TookUnseen).
	// lostTo names the peer that took the group from this node at the latest owner change.
	displacedBy string
	lostTo      string
	// lostUnexplained: when lostTo took the group, this node was its desired owner, so the
	// taker can only have counted it dead (or an operator asked it to take over).
	lostUnexplained bool
	// tookFrom names the owner this node took the group from at its latest takeover when
	// that owner was not an alive member then; "" otherwise.
	tookFrom string
	// ownsHeard is when each peer, alive, first announced it owns this group.
	ownsHeard map[string]time.Time
	// problems are the EC2 findings already logged.
	problems      map[string]bool
	yielded       bool
	eligibleSince time.Time
	// noRoom says why this node cannot hold the group's Elastic IP (addresses.go), "" when it
	// can.
	noRoom string
	force  bool

	claiming bool
	// claimCancel cancels the claim in progress; abandoned says why it was cancelled
	// (abandonClaims), "" when it was not.
	claimCancel context.CancelFunc
	abandoned   string
	nextClaim   time.Time
	failures    int
	// trigger is when the current non-idle verdict first appeared; lastKey identifies it.
	trigger time.Time
	lastKey string
	waiters []chan error
	last    *TakeoverView
}

func newGroupState(g config.Group) *groupState {
	return &groupState{cfg: g, ownsHeard: make(map[string]time.Time), problems: make(map[string]bool)}
}

// unreadableRetry is how often a group is read again while EC2 cannot be read, so that a
// takeover waiting for EC2 goes ahead soon after EC2 is back.
const unreadableRetry = time.Second

// EC2's Describe calls may show the state from before a change for a while after it
// (eventual consistency). A read within staleWindow of this node's own successful claim that
// shows, for everything not on this node, exactly what the claim started from is taken for
// such a stale read and read again after staleReread, rather than acted on: no repeat claim,
// no error. Anything else (a route changed by hand, a peer's takeover) is a real change.
const (
	staleWindow = 2 * time.Second
	staleReread = 500 * time.Millisecond
)

type observeResult struct {
	g   *groupState
	obs ec2.Observation
	err error
}

// observe reads the group from EC2 in the background, unless a read is already running.
func (a *Agent) observe(g *groupState) {
	if g.observing {
		return
	}
	g.observing = true
	spec := a.spec(g)
	a.spawn(func() {
		ctx, cancel := context.WithTimeout(a.ctx, a.ec2Budget())
		defer cancel()
		obs, err := a.deps.Cloud.Observe(ctx, spec, a.self)
		select {
		case a.observed <- observeResult{g: g, obs: obs, err: err}:
		case <-a.ctx.Done():
		}
	})
}

// ec2Budget bounds one read or one claim: a few attempts of call_timeout each.
func (a *Agent) ec2Budget() time.Duration { return 4 * a.cfg.EC2.CallTimeout }

func (a *Agent) spec(g *groupState) ec2.Group {
	members := []string{a.id.InstanceID}
	for name := range a.members {
		members = append(members, name)
	}
	return GroupSpec(a.cfg, g.cfg, members)
}

func (a *Agent) onObserved(r observeResult) {
	g := r.g
	g.observing = false
	if r.err != nil {
		if g.obsErr == nil || g.obsErr.Error() != r.err.Error() {
			a.logger.Error("could not read the group from EC2", "group", g.cfg.Name, "error", r.err, "retry_in", unreadableRetry.String())
		}
		g.obsErr, g.failedAt = r.err, time.Now()
		return
	}
	if g.obsErr != nil {
		a.logger.Info("EC2 readable again", "group", g.cfg.Name)
		// A claim that failed while EC2 was down goes ahead now, not after its backoff.
		g.nextClaim, g.failures = time.Time{}, 0
	}
	g.obsErr = nil
	now := time.Now()
	if now.Sub(g.claimedAt) < staleWindow && a.showsBeforeClaim(g, r.obs) {
		a.logger.Debug("EC2 still shows the state from before this node's claim; reading again",
			"group", g.cfg.Name, "claimed_ago", now.Sub(g.claimedAt).Round(time.Millisecond).String())
		g.rereadAt = now.Add(staleReread)
		return
	}
	a.noteSelfState(r.obs.Instances[a.id.InstanceID].State)
	a.noteRoom(g, r.obs, now)
	a.checkPermissions(g, r.obs)
	// Findings are worth a warning once peers have had time to join: before that, route
	// tables that point at a peer not yet seen look unmanaged.
	if time.Since(a.started) >= a.startupGrace() {
		for _, p := range r.obs.Problems {
			if !g.problems[p] {
				g.problems[p] = true
				a.logger.Warn("EC2 configuration problem", "group", g.cfg.Name, "problem", p)
			}
		}
	}
	owner := ownerOf(r.obs)
	if !g.observed || owner != g.owner {
		if g.observed {
			a.logger.Info("owner changed in EC2", "group", g.cfg.Name, "from", orNone(g.owner), "to", orNone(owner))
			lost := g.owner == a.id.InstanceID && owner != "" && owner != a.id.InstanceID
			switch {
			case lost && a.tookUnseen(g, owner, now):
				a.setDisplaced(g, owner)
				a.logger.Warn("a peer this node cannot see took the group: partition suspected; not taking it back while that peer runs",
					"group", g.cfg.Name, "peer", owner)
			case lost && a.saysTookUnseen(owner, g):
				a.displacedByDeaf(g, owner)
			}
			g.lostTo, g.lostUnexplained = "", false
			if lost {
				g.lostTo = owner
				g.lostUnexplained = Desired(a.view(g, now).Peers) == a.id.InstanceID
			}
		}
		if owner != a.id.InstanceID {
			g.tookFrom = ""
		}
		g.owner, g.ownerAt = owner, now
	}
	if l := layoutOf(owner, a.routes(g, r.obs)); l != g.layout || !g.observed {
		g.layout, g.layoutAt = l, r.obs.ReadAt
	}
	g.obs, g.observed, g.fresh = r.obs, true, true
	a.noteSourceNAT()
}

// startupGrace is how long after start peers are given to join before this node acts on
// an owner it has not seen.
func (a *Agent) startupGrace() time.Duration { return 2 * a.cfg.Gossip.RejoinInterval }

// tookUnseen reports whether peer took g from this node while this node could not see it:
// peer is not an alive member now, or it dropped out of this node's view between the last
// moment this node knew it owned g and the moment it heard that peer owns it (peer's own
// announcement, or this read). A takeover this node watched happen (failback, yield, an
// operator's takeover) is not one, even if peer dies right after it.
func (a *Agent) tookUnseen(g *groupState, peer string, now time.Time) bool {
	if !a.isAlive(peer) {
		return true
	}
	since := latest(g.ownerAt, g.obs.ReadAt)
	learned := now
	if t, ok := g.ownsHeard[peer]; ok && t.After(since) && t.Before(now) {
		learned = t
	}
	gone := a.members[peer].Gone
	return !gone.IsZero() && !gone.Before(since) && !gone.After(learned)
}

// noteLostUnseen arms the partition rule when the peer that took g from this node without
// a reason this node knows of is now dead to it and was not heard from since this node read
// the takeover: the two had lost each other before it, so it was a partition, not a death.
// (Each side's read of the other's takeover can come before its own verdict on the other.)
func (a *Agent) noteLostUnseen(g *groupState, now time.Time) {
	p := g.lostTo
	if p == "" || !g.lostUnexplained || g.owner != p || g.displacedBy != "" {
		return
	}
	if a.isAlive(p) && !a.silentDead(p, now) {
		return
	}
	if last := a.gossip.LastContact(p); last.IsZero() || last.Before(g.ownerAt) {
		a.setDisplaced(g, p)
		a.logger.Warn("the peer that took the group was not heard from since, and now looks dead: partition suspected; not taking it back while that peer runs",
			"group", g.cfg.Name, "peer", p, "last_heard", last.UTC().Format(time.RFC3339Nano))
	}
}

// saysTookUnseen reports whether peer, alive, announces that it took g from an owner it could
// not reach and still cannot.
func (a *Agent) saysTookUnseen(peer string, g *groupState) bool {
	m, ok := a.members[peer]
	return ok && m.State == gossip.StateAlive && m.MetaErr == "" && m.Meta.Groups[g.cfg.Name].TookUnseen
}

// displacedByDeaf records that peer, which this node can see, took g from this node because
// it could not see this node: a one-way partition. Taking the group back would move it to a
// node that peer counts dead; this node leaves it until peer can see it again.
func (a *Agent) displacedByDeaf(g *groupState, peer string) {
	a.setDisplaced(g, peer)
	a.logger.Warn("a peer that cannot see this node took the group: one-way partition suspected; not taking it back until that peer sees this node again",
		"group", g.cfg.Name, "peer", peer)
}

// ownerOf names the instance holding the Elastic IP: the group's owner as EC2 tells it.
func ownerOf(obs ec2.Observation) string {
	if obs.EIP.InstanceID != "" {
		return obs.EIP.InstanceID
	}
	if obs.EIP.ENIID != "" {
		for _, in := range obs.Instances {
			if in.ENIID == obs.EIP.ENIID {
				return in.ID
			}
		}
		return obs.EIP.ENIID
	}
	return ""
}

// routes turns the managed routes of obs into the decision's terms. In interface-targeting
// mode a route through any interface but this node's primary one does not count as this
// node's.
func (a *Agent) routes(g *groupState, obs ec2.Observation) []Route {
	out := make([]Route, 0, len(obs.Routes))
	selfENI := obs.Instances[a.id.InstanceID].ENIID
	for _, r := range obs.Routes {
		target := r.InstanceID
		if a.self.TargetENI && target == a.id.InstanceID && (r.ENIID == "" || r.ENIID != selfENI) {
			target = firstNonEmpty(r.ENIID, "a non-primary target of "+target)
		}
		out = append(out, Route{Table: r.RouteTableID, Destination: r.Destination, Target: target, State: r.State})
	}
	return out
}

// layoutOf summarizes where the Elastic IP and every route point, to notice when it changes.
func layoutOf(owner string, routes []Route) string {
	parts := make([]string, 0, len(routes)+1)
	for _, r := range routes {
		parts = append(parts, r.Table+" "+r.Destination+" "+r.State+" "+r.Target)
	}
	sort.Strings(parts)
	return owner + "|" + strings.Join(parts, "|")
}

// placement maps the group's Elastic IP and each route to where it points in obs.
func (a *Agent) placement(g *groupState, obs ec2.Observation) map[string]string {
	out := map[string]string{"eip": ownerOf(obs)}
	for _, r := range a.routes(g, obs) {
		out[r.Table+" "+r.Destination] = r.State + " " + r.Target
	}
	return out
}

// showsBeforeClaim reports whether obs shows something not on this node, and everything not
// on this node just as it was in the read this node's latest claim started from.
func (a *Agent) showsBeforeClaim(g *groupState, obs ec2.Observation) bool {
	mine := a.placement(g, obs)
	stale := false
	for k, v := range mine {
		if v == a.id.InstanceID || v == ec2.RouteActive+" "+a.id.InstanceID {
			continue
		}
		if before, ok := g.beforeClaim[k]; !ok || before != v {
			return false
		}
		stale = true
	}
	return stale
}
