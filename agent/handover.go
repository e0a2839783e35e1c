package agent

import (
	"fmt"
	"time"
)

const (
	// handoverTimeout bounds how long a graceful shutdown waits for a peer to take over.
	handoverTimeout = 10 * time.Second
	// handoverReadEvery paces the reads of EC2 while waiting for a peer to take over.
	handoverReadEvery = 250 * time.Millisecond
	// announceTimeout bounds the wait for the shutdown announcement to be broadcast.
	announceTimeout = time.Second
)

// handoverPhase is where a graceful shutdown stands.
type handoverPhase int

const (
	// settling: a claim already sent to EC2 may still land; wait for it, so that what this
	// node owns is known before deciding whether to wait for a peer.
	settling handoverPhase = iota
	// announcing: the peers are being told this node is leaving (yielded everything).
	announcing
	// waiting: until EC2 shows a peer holding every group this node owned.
	waiting
	// finished: Close may leave the cluster.
	finished
)

// handover is the run loop's state during a graceful shutdown. Once it exists this node is
// leaving: it advertises every group as yielded and never claims again.
type handover struct {
	phase handoverPhase
	// since is when the shutdown began, as announced to the peers.
	since    time.Time
	deadline time.Time
	lastRead time.Time
	done     []chan struct{}
	// notice is the notice of the instance's end that began the handover (handoff.go);
	// "" for a shutdown. After a notice the agent stays up, leaving.
	notice string
}

// beginHandover starts the shutdown handover; done is closed when it is over.
func (a *Agent) beginHandover(done chan struct{}) {
	if a.leave != nil {
		// A shutdown during a handover on a notice waits for that handover to end.
		if a.leave.phase == finished {
			close(done)
		} else {
			a.leave.done = append(a.leave.done, done)
		}
		return
	}
	a.leave = &handover{phase: settling, done: []chan struct{}{done}, since: time.Now().Truncate(time.Millisecond)}
	for _, g := range a.groups {
		g.force = false
		a.finishWaiters(g, errShuttingDown)
	}
}

// stepHandover moves the handover on; the run loop calls it after every decision round.
func (a *Agent) stepHandover(now time.Time) {
	h := a.leave
	if h == nil {
		return
	}
	switch h.phase {
	case settling:
		for _, g := range a.groups {
			// A claim in progress ends first; and a node stopped before its first read of
			// EC2 reads it before deciding it owns nothing to hand over.
			if g.claiming || (!g.observed && g.obsErr == nil) {
				return
			}
		}
		h.phase = announcing
		m := a.meta()
		a.spawn(func() {
			err := a.gossip.PublishMeta(m, announceTimeout)
			select {
			case a.announced <- err:
			case <-a.ctx.Done():
			}
		})
	case waiting:
		if owned := a.ownedGroups(); len(owned) == 0 {
			a.logger.Info("handover complete")
			a.finishHandover()
			return
		}
		if now.After(h.deadline) {
			if h.notice != "" {
				a.logger.Warn("no peer took over in time; still leaving: a peer that becomes eligible takes the groups", "timeout", handoverTimeout, "groups", a.ownedGroups())
			} else {
				a.logger.Warn("no peer took over in time; shutting down anyway", "timeout", handoverTimeout, "groups", a.ownedGroups())
			}
			a.finishHandover()
			return
		}
		if now.Sub(h.lastRead) >= handoverReadEvery {
			h.lastRead = now
			for _, g := range a.groups {
				a.observe(g)
			}
		}
	}
}

// onAnnounced continues the handover once the peers were told this node is leaving.
func (a *Agent) onAnnounced(err error) {
	h := a.leave
	if h == nil || h.phase != announcing {
		return
	}
	if err != nil {
		a.logger.Warn("could not announce the shutdown", "error", err)
	}
	owned := a.ownedGroups()
	switch {
	case len(owned) == 0:
		// A peer took the groups on the leaving metadata alone, before the announcement
		// was confirmed sent; or this node owned none.
		a.logger.Info("handing over before shutdown", "groups", owned)
		a.logger.Info("handover complete")
		a.finishHandover()
	case !a.anyEligiblePeer():
		a.logger.Warn(fmt.Sprintf("%s with no eligible peer: groups stay where they are", a.leavingReason()), "groups", owned)
		a.finishHandover()
	default:
		msg := "handing over before shutdown"
		if h.notice != "" {
			msg = "handing over on " + h.notice
		}
		a.logger.Info(msg, "groups", owned)
		h.phase, h.deadline = waiting, time.Now().Add(handoverTimeout)
	}
}

func (a *Agent) finishHandover() {
	a.leave.phase = finished
	for _, d := range a.leave.done {
		close(d)
	}
}
