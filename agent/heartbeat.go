package agent

import (
	"context"
	"time"

	"github.com/natganker/natganker/config"
)

// An eligible node pings directly, every gossip.heartbeat_interval, the peer it watches for a
// group (watched): the owner if it would replace it, else the eligible peer just above it.
// Each answer is contact; config.HeartbeatMisses intervals without any make the peer quiet,
// which starts a confirmation burst at once, and a burst that finds nothing makes the peer
// dead for the decision without waiting for memberlist's suspicion timeout (which, with more
// members, also waits for confirmations from members that may be dead themselves). The
// README's "How fast, how safe" works out the bound and the false-failover odds.

// heartbeatState is one peer being watched.
type heartbeatState struct {
	addr   string
	since  time.Time
	cancel context.CancelFunc
}

// heartbeatQuiet is how long a watched peer may go without a sign of life before it counts
// as quiet; 0 when heartbeats are off.
func (a *Agent) heartbeatQuiet() time.Duration {
	return config.HeartbeatMisses * a.cfg.Gossip.HeartbeatInterval
}

// quietAfter is how long the owner called name may stay silent before it counts as quiet:
// the heartbeat's window once the heartbeat has run that long, else memberlist's probes'.
func (a *Agent) quietAfter(name string, now time.Time) time.Duration {
	if hb := a.heartbeats[name]; hb != nil {
		if q := a.heartbeatQuiet(); now.Sub(hb.since) >= q {
			return q
		}
	}
	return time.Duration(quietProbes * float64(a.cfg.Gossip.ProbeInterval))
}

// quiet reports whether name, alive to memberlist, has shown no sign of life for as long as
// makes it quiet.
func (a *Agent) quiet(name string, now time.Time) bool {
	if !a.isAlive(name) {
		return false
	}
	last := a.gossip.LastContact(name)
	return !last.IsZero() && now.Sub(last) >= a.quietAfter(name, now)
}

// silentDead reports whether name, alive to memberlist, is dead as far as this node can tell:
// quiet, and a burst sent after its last sign of life found nothing.
func (a *Agent) silentDead(name string, now time.Time) bool {
	return a.quiet(name, now) && a.confirmedDead(name, now)
}

// watchPeers starts a heartbeat to each peer in want (name → gossip address) and stops the
// others.
func (a *Agent) watchPeers(want map[string]string, now time.Time) {
	every := a.cfg.Gossip.HeartbeatInterval
	for name, hb := range a.heartbeats {
		if addr, ok := want[name]; !ok || addr != hb.addr || every <= 0 {
			hb.cancel()
			delete(a.heartbeats, name)
			a.logger.Debug("heartbeat stopped", "peer", name)
		}
	}
	if every <= 0 {
		return
	}
	for name, addr := range want {
		if _, ok := a.heartbeats[name]; ok || addr == "" {
			continue
		}
		ctx, cancel := context.WithCancel(a.ctx)
		a.heartbeats[name] = &heartbeatState{addr: addr, since: now, cancel: cancel}
		a.logger.Debug("heartbeat started", "peer", name, "address", addr, "every", every.String())
		a.spawn(func() { a.heartbeat(ctx, name, addr, every) })
	}
}

// heartbeat pings name every interval until ctx ends, and wakes the loop as soon as name has
// been quiet for the heartbeat's window (and again at each ping while it stays quiet). Pings
// overlap: each waits up to the probe timeout, which may be longer than the interval.
func (a *Agent) heartbeat(ctx context.Context, name, addr string, every time.Duration) {
	quiet := a.heartbeatQuiet()
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(next) {
			a.spawn(func() { _ = a.gossip.Heartbeat(name, addr) })
			next = next.Add(every)
			if !next.After(now) {
				next = now.Add(every)
			}
		}
		at := next
		if last := a.gossip.LastContact(name); !last.IsZero() {
			if due := last.Add(quiet); !now.Before(due) {
				select {
				case a.wake <- struct{}{}:
				default:
				}
			} else if due.Before(at) {
				at = due
			}
		}
		timer.Reset(time.Until(at))
	}
}
