package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist's callbacks. Each copies what it keeps and never blocks: memberlist calls them
// from its own goroutines, some while holding its locks.

// record turns a memberlist node into a Member, updates the table and queues the event.
// It copies everything it keeps: memberlist reuses the node after the callback returns.
func (g *Gossip) record(kind EventKind, n *memberlist.Node) {
	now := time.Now()
	m := Member{Name: n.Name, Addr: n.Address(), State: StateAlive, Since: now}
	meta, err := DecodeMeta(append([]byte(nil), n.Meta...))
	if err != nil {
		m.MetaErr = err.Error()
	} else {
		m.Meta = meta
	}
	g.mu.Lock()
	prev, known := g.members[n.Name]
	if kind != EventLeave && m.MetaErr == "" {
		m.Meta = g.ordered(n.Name, m.Meta, prev, known, now)
	}
	if kind == EventLeave {
		// memberlist reports every departure the same way (and Node.State is not reliable in
		// the callback): a node that announced it was leaving left; any other died.
		m.State = StateDead
		if known && prev.Meta.Leaving {
			m.State = StateLeft
		}
		if known {
			// Keep what the node last said about itself; a leave carries nothing new.
			m.Meta, m.MetaErr = prev.Meta, prev.MetaErr
		}
	}
	if known && prev.State == m.State {
		m.Since = prev.Since
	}
	if known {
		m.Gone = prev.Gone
	}
	if m.State != StateAlive {
		m.Gone = now
	}
	g.members[n.Name] = m
	if m.State == StateAlive {
		g.contact[n.Name] = now
	}
	m = g.withPath(m)
	g.mu.Unlock()
	g.push(Event{Kind: kind, Member: m, At: now})
}

type delegate Gossip

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		// EncodeMeta already refuses anything over MaxMetaSize; this guards a smaller limit.
		return nil
	}
	return append([]byte(nil), d.meta...)
}
func (d *delegate) NotifyMsg(msg []byte)                       { (*Gossip)(d).notify(msg) }
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

type eventDelegate Gossip

func (e *eventDelegate) NotifyJoin(n *memberlist.Node)   { (*Gossip)(e).record(EventJoin, n) }
func (e *eventDelegate) NotifyLeave(n *memberlist.Node)  { (*Gossip)(e).record(EventLeave, n) }
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { (*Gossip)(e).record(EventUpdate, n) }

type pingDelegate Gossip

func (p *pingDelegate) AckPayload() []byte { return nil }
func (p *pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	p.mu.Lock()
	p.contact[other.Name] = time.Now()
	p.mu.Unlock()
	p.path.udpAck(other.Address(), other.Name)
}

type conflictDelegate Gossip

func (c *conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	c.logger.Error("two nodes claim the same name: is the same instance id configured twice?",
		"name", existing.Name, "known_address", existing.Address(), "other_address", other.Address())
}
