package gossip

import (
	"context"
	"fmt"
	"time"
)

// SetMeta publishes m to the peers. It returns at once; the update reaches peers within
// about one gossip interval.
func (g *Gossip) SetMeta(m Meta) error {
	if err := g.storeMeta(m); err != nil {
		return err
	}
	select {
	case g.metaDirty <- struct{}{}:
	default:
	}
	return nil
}

// PublishMeta publishes m and waits until memberlist has broadcast it or timeout passes.
// Use it before a graceful leave, where the peers must see the handover first.
func (g *Gossip) PublishMeta(m Meta, timeout time.Duration) error {
	if err := g.storeMeta(m); err != nil {
		return err
	}
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: publish metadata: %w", err)
	}
	return nil
}

// storeMeta makes m what memberlist hands out as this node's metadata from now on.
func (g *Gossip) storeMeta(m Meta) error {
	m.Started = g.started
	b, err := EncodeMeta(m)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.meta = b
	g.mu.Unlock()
	return nil
}

// metaLoop pushes metadata changes with UpdateNode, done here so that SetMeta never
// blocks the agent. It queues the broadcast and does not wait for its retransmits, so that
// a PublishMeta behind it is not held up: memberlist reads a timeout of 0 as "wait for
// ever", so the push passes the shortest one and drops the timeout error it always gets
// (the broadcast stays queued). storeMeta has already refused the only other error, meta
// over memberlist's size limit.
func (g *Gossip) metaLoop(ctx context.Context) {
	defer g.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.metaDirty:
			g.updateMu.Lock()
			_ = g.ml.UpdateNode(time.Nanosecond)
			g.updateMu.Unlock()
		}
	}
}
