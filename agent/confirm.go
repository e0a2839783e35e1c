package agent

import (
	"net"
	"strconv"
	"time"

	"github.com/natganker/natganker/gossip"
)

const (
	// reconfirmAfter is the least time between two confirmation bursts at the same peer.
	reconfirmAfter = 200 * time.Millisecond
	// confirmValidFor is how long a burst at an instance that is not a member counts.
	confirmValidFor = 15 * time.Second
	// answerValidFor is how long a burst that found the peer up counts before it is probed
	// again: an answer is news for a while only.
	answerValidFor = 10 * time.Second
	// silentValidFor is how long a burst that found nothing counts against a member that
	// memberlist still has alive (the heartbeat's fast path): a takeover ahead of gossip's
	// verdict acts on fresh evidence only.
	silentValidFor = time.Second
	// keyWarnEvery is how often the log names again an owner that runs with another key.
	keyWarnEvery = time.Minute
	// nonMemberDeadBursts consecutive bursts finding nothing make an instance that is not a
	// member dead. Its only key-independent sign of life is a TCP handshake, which a lossy
	// link loses now and then; a member's silence is also backed by gossip's own verdict.
	nonMemberDeadBursts = 3
)

// confirmState is the latest confirmation burst at one peer.
type confirmState struct {
	running bool
	// launched is when the running burst started; started, done and probe are the latest
	// finished burst's, which still counts while the next one runs.
	launched time.Time
	started  time.Time
	done     time.Time
	probe    gossip.Probe
	// deadRun counts the consecutive bursts that found nothing.
	deadRun int
	// warned and keyWarned are when the log last said the peer answers although gossip
	// lost it, and that it runs with another key.
	warned    time.Time
	keyWarned time.Time
}

type confirmResult struct {
	name  string
	probe gossip.Probe
	err   error
}

// burst returns the latest finished burst at name if it still counts, else nil. This is the
// one place that says when a confirmation counts: for a member, a burst sent after its last
// sign of life; for an instance that is not a member, one finished within confirmValidFor;
// and a burst that found the peer up only for answerValidFor.
func (a *Agent) burst(name string, now time.Time) *confirmState {
	c := a.confirms[name]
	if c == nil || c.done.IsZero() {
		return nil
	}
	if c.probe.Alive() && now.Sub(c.done) >= answerValidFor {
		return nil
	}
	if _, member := a.members[name]; member {
		if !c.started.After(a.gossip.LastContact(name)) {
			return nil
		}
		if !c.probe.Alive() && a.isAlive(name) && now.Sub(c.done) >= silentValidFor {
			return nil
		}
	} else if now.Sub(c.done) >= confirmValidFor {
		return nil
	}
	return c
}

// confirmedDead reports whether the latest burst at name that still counts found it dead, by
// as many bursts in a row as its kind needs.
func (a *Agent) confirmedDead(name string, now time.Time) bool {
	c := a.burst(name, now)
	if c == nil || c.probe.Alive() {
		return false
	}
	if _, member := a.members[name]; !member && c.deadRun < nonMemberDeadBursts {
		return false
	}
	return true
}

// confirm probes the group's owner directly: at its gossip address, or for an owner that is not
// a member, at its private IP as EC2 reports it.
func (a *Agent) confirm(g *groupState, now time.Time) {
	name := g.owner
	addr := ""
	if m, ok := a.members[name]; ok {
		addr = m.Addr
	} else if in, ok := g.obs.Instances[name]; ok && in.PrivateIP != "" {
		addr = net.JoinHostPort(in.PrivateIP, strconv.Itoa(a.cfg.Gossip.AdvertisePort))
	}
	a.confirmPeer(name, addr, now)
}

// confirmPeer probes name at addr directly, unless a burst is running, just ran, or still
// counts with a verdict Decide can act on.
func (a *Agent) confirmPeer(name, addr string, now time.Time) {
	c := a.confirms[name]
	if c == nil {
		c = &confirmState{}
		a.confirms[name] = c
	}
	if c.running || now.Sub(c.launched) < reconfirmAfter || now.Sub(c.done) < reconfirmAfter {
		return
	}
	if b := a.burst(name, now); b != nil && (a.confirmedDead(name, now) || b.probe.KeyMismatch()) {
		// A silent verdict against a member memberlist still has alive lasts silentValidFor:
		// it is renewed halfway, so that it does not lapse while the owner stays silent.
		if !(a.isAlive(name) && !b.probe.Alive() && now.Sub(b.done) >= silentValidFor/2) {
			return
		}
	}
	if addr == "" {
		// Nothing to probe: an instance with no address cannot be forwarding traffic.
		c.probe, c.started, c.launched, c.done = gossip.Probe{}, now, now, now
		return
	}
	c.running, c.launched = true, now
	a.spawn(func() {
		p, err := a.gossip.Confirm(a.ctx, name, addr)
		select {
		case a.confirmed <- confirmResult{name: name, probe: p, err: err}:
		case <-a.ctx.Done():
		}
	})
}

func (a *Agent) onConfirmed(r confirmResult) {
	c := a.confirms[r.name]
	c.running, c.started, c.done = false, c.launched, time.Now()
	a.burstFinished(r)
	if r.err != nil {
		// No verdict: the burst counts as never sent.
		c.done, c.probe = time.Time{}, gossip.Probe{}
		a.logger.Error("could not probe peer", "peer", r.name, "error", r.err)
		return
	}
	c.probe = r.probe
	if r.probe.Alive() {
		c.deadRun = 0
	} else {
		c.deadRun++
	}
	args := []any{"peer", r.name, "answered", r.probe.Answered, "gossip_port_open", r.probe.Reachable, "probe_ms", r.probe.Took.Milliseconds()}
	switch {
	case a.isAlive(r.name):
		// An early burst while memberlist still counts the peer alive. An open port with
		// no answer here is a stalled process, not another key (memberlist reads it).
		a.logger.Debug("peer quiet; direct probes", args...)
	case r.probe.KeyMismatch():
		if c.done.Sub(c.keyWarned) >= keyWarnEvery {
			c.keyWarned = c.done
			a.logger.Error("peer's gossip port is open but it does not answer probes sealed with this node's key: it runs with a different gossip key (give every agent the same key), or its agent is stalled; it is not taken for dead", args...)
		}
	case r.probe.Alive():
		// Once per time gossip loses the owner, not once per burst.
		if !c.warned.After(a.members[r.name].Gone) {
			c.warned = c.done
			a.logger.Warn("gossip reports the owner gone but it answers direct probes: not taking over", args...)
		}
	case !a.confirmedDead(r.name, c.done):
		a.logger.Debug("no answer from an instance that is not a member; probing again", append(args, "bursts", c.deadRun)...)
	default:
		a.logger.Info("owner confirmed unreachable by direct probes", args...)
	}
}
