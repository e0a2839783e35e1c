package gossip

import "time"

// Memberlist orders what a node says about itself by incarnation, a counter that starts again
// at every start of the node. Metadata captured from an earlier start and replayed to a
// cluster that restarted can therefore win over the node's current metadata: an old "yielded"
// or "unhealthy" would be believed until the node refutes it. Every node stamps its metadata
// with when its agent started (Meta.Started), and a node's metadata from an earlier start than
// the one already known is held back.
//
// A node whose clock went back between two starts also sends an earlier start time; nothing
// newer comes to replace it, so held-back metadata is believed once it has stood alone for
// olderStartBelievedAfter. A replay is refuted by the node well within that time (memberlist
// passes the replayed message on, the node sees it and answers with a higher incarnation).
var olderStartBelievedAfter = 10 * time.Second

// olderStart is metadata from an earlier start of a node than the one known, held back.
type olderStart struct {
	meta Meta
	seen time.Time // when the earlier start's metadata was first held back
}

// ordered returns the metadata to keep for node name, which just sent meta, when prev (if
// known) is what was kept so far. Metadata from an earlier start than prev's is held back and
// prev's kept. The caller holds g.mu.
func (g *Gossip) ordered(name string, meta Meta, prev Member, known bool, now time.Time) Meta {
	if !known || prev.MetaErr != "" || !meta.Started.Before(prev.Meta.Started) {
		delete(g.older, name)
		return meta
	}
	o, held := g.older[name]
	if !held || !o.meta.Started.Equal(meta.Started) {
		o.seen = now
		g.logger.Warn("metadata from an earlier start of a peer ignored: a replayed packet, or the peer's clock went back",
			"peer", name, "started", meta.Started.UTC().Format(time.RFC3339Nano),
			"current_start", prev.Meta.Started.UTC().Format(time.RFC3339Nano),
			"believed_after", olderStartBelievedAfter.String()+" if nothing newer comes")
	}
	o.meta = meta
	g.older[name] = o
	return prev.Meta
}

// believeOlderStarts takes the held-back metadata that nothing newer replaced within
// olderStartBelievedAfter. The caller holds g.mu.
func (g *Gossip) believeOlderStarts(now time.Time) {
	for name, o := range g.older {
		if now.Sub(o.seen) < olderStartBelievedAfter {
			continue
		}
		delete(g.older, name)
		m, ok := g.members[name]
		if !ok {
			continue
		}
		m.Meta, m.MetaErr = o.meta, ""
		g.members[name] = m
		g.logger.Warn("believing a peer's metadata from an earlier start: nothing newer came",
			"peer", name, "started", o.meta.Started.UTC().Format(time.RFC3339Nano), "waited", now.Sub(o.seen).Round(time.Millisecond).String())
	}
}
