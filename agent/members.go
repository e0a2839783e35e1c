package agent

import (
	"maps"
	"reflect"
	"time"

	"github.com/natganker/natganker/gossip"
)

// Membership is kept once, in gossip's table (itself built from memberlist's callbacks).
// a.members is a snapshot of it taken on each event, so that every decision of one loop
// round sees one consistent view; the events themselves only say "look again".

func (a *Agent) onEvent(e gossip.Event) {
	prev := a.members
	a.members = make(map[string]gossip.Member, len(prev))
	for _, m := range a.gossip.Members() {
		if m.Name != a.id.InstanceID {
			a.members[m.Name] = m
		}
	}
	for name, m := range a.members {
		old, known := prev[name]
		if known && reflect.DeepEqual(old, m) {
			continue
		}
		a.onMemberChanged(old, known, m, e.At)
	}
}

// onMemberChanged logs what changed about a peer and reacts to it taking a group or coming
// back into view.
func (a *Agent) onMemberChanged(prev gossip.Member, known bool, m gossip.Member, at time.Time) {
	for _, g := range a.groups {
		owns := m.State == gossip.StateAlive && m.Meta.Groups[g.cfg.Name].Owns
		if _, heard := g.ownsHeard[m.Name]; owns && !heard {
			g.ownsHeard[m.Name] = at
			// A peer says it took the group: read EC2 now rather than at the next
			// reconcile, so that this node's idea of the owner is not stale for long.
			if g.owner != m.Name {
				a.observe(g)
			}
		} else if !owns {
			delete(g.ownsHeard, m.Name)
		}
	}
	switch {
	case !known || prev.State != m.State:
		args := []any{"peer", m.Name, "address", m.Addr, "state", string(m.State)}
		if m.MetaErr != "" {
			args = append(args, "metadata_error", m.MetaErr)
		}
		if m.State == gossip.StateAlive {
			a.logger.Info("peer alive", args...)
		} else {
			a.logger.Warn("peer gone", args...)
		}
	case prev.Meta.Healthy != m.Meta.Healthy:
		if m.Meta.Healthy {
			a.logger.Info("peer healthy", "peer", m.Name)
		} else {
			a.logger.Warn("peer unhealthy", "peer", m.Name, "reason", m.Meta.Reason)
		}
	}
	if m.State != gossip.StateAlive {
		return
	}
	for _, g := range a.groups {
		if g.displacedBy == "" && a.saysTookUnseen(m.Name, g) && g.lostTo == m.Name && g.owner == m.Name {
			// Its announcement came after this node's read of the takeover.
			a.displacedByDeaf(g, m.Name)
		}
	}
}

// clearDisplaced lifts the partition rule once the peer that took g over while the two could
// not see each other is alive to this node, answers it, and no longer says it cannot see this
// node: failback rules apply again. It runs every decision round, not only when the peer
// changes: the rule may be armed by a read of EC2 that comes after the peer's last change.
func (a *Agent) clearDisplaced(g *groupState, now time.Time) {
	p := g.displacedBy
	if p == "" || !a.isAlive(p) || a.silentDead(p, now) || a.saysTookUnseen(p, g) {
		return
	}
	a.logger.Info("this node and the peer that took over see each other again: failback rules apply", "group", g.cfg.Name, "peer", p)
	a.setDisplaced(g, "")
}

func (a *Agent) isAlive(name string) bool {
	m, ok := a.members[name]
	return ok && m.State == gossip.StateAlive
}

// leaveValidFor is how long a peer's shutdown announcement is believed: longer than a
// handover takes, plus room for the two clocks to differ.
const leaveValidFor = time.Minute

// leaving reports whether m announced a shutdown that began recently: an announcement with no
// time, or an old one (a captured packet replayed after the cluster restarted), is not
// believed.
func leaving(m gossip.Meta, now time.Time) bool {
	if !m.Leaving || m.LeavingSince.IsZero() {
		return false
	}
	d := now.Sub(m.LeavingSince)
	return d < leaveValidFor && d > -leaveValidFor
}

// peerOf is a member as the decision for one group sees it at now.
func peerOf(m gossip.Member, group string, now time.Time) Peer {
	p := Peer{
		Name: m.Name, Alive: m.State == gossip.StateAlive, Left: m.State == gossip.StateLeft, Since: m.Since,
		Healthy: m.MetaErr == "" && m.Meta.Healthy, Reason: m.Meta.Reason, Leaving: leaving(m.Meta, now),
	}
	if m.MetaErr != "" {
		p.Reason = "unreadable metadata: " + m.MetaErr
	}
	if gm, ok := m.Meta.Groups[group]; ok && m.MetaErr == "" {
		p.InGroup, p.Priority, p.Yielded, p.Owns = true, gm.Priority, gm.Yielded, gm.Owns
		if gm.NoRoom {
			p.NoRoom = peerNoRoom
		}
	}
	return p
}

// anyEligiblePeer reports whether some peer could take one of this node's groups.
func (a *Agent) anyEligiblePeer() bool {
	for _, g := range a.groups {
		for name, m := range a.members {
			if name != a.id.InstanceID && peerOf(m, g.cfg.Name, time.Now()).Eligible() {
				return true
			}
		}
	}
	return false
}

// meta is what this node tells its peers.
func (a *Agent) meta() gossip.Meta {
	leaving := a.leave != nil
	healthy, reason := a.healthy()
	m := gossip.Meta{Healthy: healthy, Reason: reason, Leaving: leaving, Groups: make(map[string]gossip.GroupMeta)}
	if leaving {
		m.LeavingSince = a.leave.since
	}
	for _, g := range a.groups {
		// A shutdown is announced by Leaving (with its time), not by yielding every group, so
		// that an old announcement replayed later can be told apart.
		owns := g.owner == a.id.InstanceID
		m.Groups[g.cfg.Name] = gossip.GroupMeta{Priority: g.cfg.Priority, Yielded: g.yielded, Owns: owns,
			TookUnseen: owns && g.tookFrom != "" && !a.isAlive(g.tookFrom), NoRoom: g.noRoom != ""}
	}
	return m
}

// publish sends this node's metadata to the peers when it changed. It runs after every
// decision round, ten times a second even when idle, so it compares fields rather than
// formatting the metadata (formatting was about 5% of an idle agent's CPU in a profile).
func (a *Agent) publish() {
	m := a.meta()
	if p := a.publishedMeta; p != nil && sameMeta(*p, m) {
		return
	}
	if err := a.gossip.SetMeta(m); err != nil {
		a.logger.Error("could not publish metadata", "error", err)
		return
	}
	a.publishedMeta = &m
}

// sameMeta reports whether metadata b would tell the peers nothing that a did not.
func sameMeta(a, b gossip.Meta) bool {
	return a.Healthy == b.Healthy && a.Reason == b.Reason && a.Leaving == b.Leaving &&
		a.LeavingSince.Equal(b.LeavingSince) && a.Started.Equal(b.Started) && maps.Equal(a.Groups, b.Groups)
}

func (a *Agent) ownedGroups() []string {
	var out []string
	for _, g := range a.groups {
		if g.owner == a.id.InstanceID {
			out = append(out, g.cfg.Name)
		}
	}
	return out
}
