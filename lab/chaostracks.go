package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// The chaos run's faults: what each track draws, when a fault may start, and how it is
// injected and removed.

// faultSpec is one draw: what to inject, where and for how long.
type faultSpec struct {
	kind FaultKind
	role string  // owner or standby, for victim faults
	pick float64 // host choice where no role applies: nat1 below 0.5
	hold time.Duration
	gap  time.Duration // idle time before it
	loss int
	ec2  EC2Fault
}

func uniform(rng *mrand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

func (c *chaosRun) allowed(k FaultKind) bool {
	if len(c.o.Kinds) == 0 {
		return true
	}
	for _, x := range c.o.Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// draw picks one of kinds with rng, skipping the ones not allowed; ok is false when none is.
func (c *chaosRun) draw(rng *mrand.Rand, kinds []FaultKind) (FaultKind, bool) {
	var ks []FaultKind
	for _, k := range kinds {
		if c.allowed(k) {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return "", false
	}
	return ks[rng.IntN(len(ks))], true
}

// The membership track: victim faults and partitions, one at a time, each only once the pair
// has settled after the previous one.
func (c *chaosRun) membershipTrack(ctx context.Context, rng *mrand.Rand) {
	kinds := []FaultKind{FaultHardKill, FaultAgentKill, FaultSigterm, FaultMasquerade, FaultPublicDown,
		FaultWrongKey, FaultClash, FaultPartition, FaultOneWay}
	for ctx.Err() == nil {
		k, ok := c.draw(rng, kinds)
		s := faultSpec{kind: k, gap: uniform(rng, 0, 4*time.Second), pick: rng.Float64()}
		s.role = "owner"
		if rng.Float64() < 0.4 {
			s.role = "standby"
		}
		switch k {
		case FaultHardKill:
			s.hold = uniform(rng, 3*time.Second, 12*time.Second)
		case FaultAgentKill:
			s.hold = uniform(rng, 2*time.Second, 10*time.Second)
		case FaultSigterm:
			s.hold = uniform(rng, 2*time.Second, 8*time.Second)
		case FaultMasquerade:
			s.hold = 0
		case FaultPublicDown:
			s.hold = uniform(rng, 2*time.Second, 10*time.Second)
		case FaultWrongKey:
			// Longer than the start-up grace, so that the wrong-key agent acts on the owner
			// it cannot see.
			s.hold = c.b.StartupGrace + uniform(rng, 2*time.Second, 15*time.Second)
		case FaultClash:
			s.role = "standby" // the owner's restart would hand over twice by itself
			s.hold = c.b.FailbackDelay + uniform(rng, 2*time.Second, 10*time.Second)
		case FaultPartition, FaultOneWay:
			s.role = ""
			s.hold = uniform(rng, 3*time.Second, 20*time.Second)
		}
		if !ok {
			return
		}
		if !sleepCtx(ctx, s.gap) {
			return
		}
		f := c.waitTurn(ctx, s)
		if f == nil {
			return
		}
		c.runMembership(ctx, f, s)
	}
}

// imdsAfterStart is how long after an agent's start its metadata mock may be stopped: the
// agent reads its identity within the first second.
const imdsAfterStart = 5 * time.Second

// restartsAgent reports whether a fault of kind k stops and starts host's agent.
func restartsAgent(k FaultKind) bool {
	switch k {
	case FaultHardKill, FaultAgentKill, FaultSigterm, FaultWrongKey, FaultClash:
		return true
	}
	return false
}

// waitTurn waits until the pair has settled and no other fault forbids s, then registers the
// fault and returns it (nil when ctx ends first).
func (c *chaosRun) waitTurn(ctx context.Context, s faultSpec) *Fault {
	for {
		if f := c.tryRegister(s); f != nil {
			return f
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return nil
		}
	}
}

// tryRegister registers s as a fault when it may start now.
func (c *chaosRun) tryRegister(s faultSpec) *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	host := ""
	if s.kind.membership() {
		if why := c.unsettledLocked(time.Now()); why != "" {
			return nil
		}
		last := c.ref.last()
		owner := last.Owner()
		switch s.role {
		case "owner":
			host = owner
		case "standby":
			host = Peer(owner)
		}
		if s.kind == FaultOneWay {
			host = Nat1
			if s.pick >= 0.5 {
				host = Nat2
			}
		}
		if restartsAgent(s.kind) && (!last.Hosts[host].IMDS || c.activeLocked(FaultIMDSDown, host)) {
			return nil
		}
	}
	if s.kind == FaultIMDSDown {
		host = Nat1
		if s.pick >= 0.5 {
			host = Nat2
		}
		for _, f := range c.active {
			if f.Kind.membership() && restartsAgent(f.Kind) && f.Host == host {
				return nil
			}
		}
		// An agent reads the metadata in its first moments: not while it is starting. The
		// driver's own record decides, not the referee's last sample, which may be 100 ms
		// old and miss a restart that just happened (a 60-minute run once stopped the mock
		// 9 ms after the end of a wrong-key fault restarted the agent).
		if running, started := c.truth.agentStarted(host); !running || time.Since(started) < imdsAfterStart {
			return nil
		}
	}
	f := &Fault{ID: len(c.faults) + 1, Kind: s.kind, Host: host, Role: s.role}
	if host == "" {
		f.Role = ""
	}
	c.faults = append(c.faults, f)
	c.active[f.ID] = f
	return f
}

func (c *chaosRun) activeLocked(k FaultKind, host string) bool {
	for _, f := range c.active {
		if f.Kind == k && f.Host == host {
			return true
		}
	}
	return false
}

// settleTimeout is how long after a membership fault (or an EC2 fault, whichever ended
// later) the owner may take to be back on nat1: a rejoin, the failback delay and a takeover,
// with room to spare.
func (c *chaosRun) settleTimeout() time.Duration {
	return c.b.StartupGrace + c.b.FailbackDelay + c.b.Takeover + 10*time.Second
}

// unsettledLocked says why a membership fault may not start now ("" when it may): another is
// in effect, an agent is not running normally or started too recently to have seen its peer,
// a datapath is broken or within its hysteresis, the NATs were partitioned too recently, or
// the group is not settled on nat1 (unless the failback is overdue: then a problem is noted
// and the run goes on).
func (c *chaosRun) unsettledLocked(now time.Time) string {
	for _, f := range c.active {
		if f.Kind.membership() {
			return fmt.Sprintf("fault #%d %s in effect", f.ID, f.Kind)
		}
	}
	s := c.ref.last()
	if s.At.IsZero() {
		return "no sample yet"
	}
	for _, h := range []string{Nat1, Nat2} {
		ht := s.Hosts[h]
		switch {
		case !ht.able():
			return fmt.Sprintf("%s: %s", h, ht.describe())
		case ht.Priority != DefaultPriority(h):
			return fmt.Sprintf("%s runs with priority %d", h, ht.Priority)
		case now.Sub(ht.AgentStart) < c.b.StartupGrace+2*time.Second:
			return fmt.Sprintf("%s's agent started %.1fs ago", h, now.Sub(ht.AgentStart).Seconds())
		case now.Sub(c.ref.lastBroken(h)) < c.b.Hysteresis+2*time.Second:
			return fmt.Sprintf("%s's datapath was broken %.1fs ago", h, now.Sub(c.ref.lastBroken(h)).Seconds())
		}
	}
	if s.partitioned() {
		return "NATs partitioned"
	}
	if now.Sub(c.lastHeal) < c.b.Rejoin+c.b.Takeover {
		return "partition healed too recently"
	}
	owner, changed := s.Owner(), c.ref.lastOwnerChange()
	if owner == "" {
		return "EIP and routes disagree"
	}
	if now.Sub(changed) < 2*time.Second {
		return "owner changed less than 2s ago"
	}
	if owner != Nat1 {
		since := latestOf(c.lastMembership, c.lastEC2.Add(c.b.EC2Recovery))
		if now.Sub(since) < c.settleTimeout() {
			return fmt.Sprintf("waiting for the failback to %s", Nat1)
		}
		if !c.settleWarned.Equal(since) {
			c.settleWarned = since
			msg := fmt.Sprintf("owner still %s %.0fs after the last fault ended, although %s is able (failback_delay %s)",
				owner, now.Sub(since).Seconds(), Nat1, c.b.FailbackDelay)
			c.problems = append(c.problems, fmt.Sprintf("%s %s", c.rel(now), msg))
			c.tl.Add(now, "chaos", "PROBLEM: %s", msg)
		}
	}
	return ""
}

// waitSettled waits until the pair has settled, or timeout; it returns why not.
func (c *chaosRun) waitSettled(ctx context.Context, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		why := c.unsettledLocked(time.Now())
		if why == "" && c.ref.last().Owner() != Nat1 {
			why = fmt.Sprintf("owner is %s", orNone(c.ref.last().Owner()))
		}
		c.mu.Unlock()
		if why == "" || time.Now().After(deadline) {
			return why
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return ctx.Err().Error()
		}
	}
}

// begin marks f in effect from now, with detail, and reports it.
func (c *chaosRun) begin(f *Fault, format string, args ...any) {
	f.Detail = fmt.Sprintf(format, args...)
	f.Start = time.Now()
	where := ""
	if f.Host != "" {
		where = " " + f.Host
		if f.Role != "" {
			where += " (" + f.Role + ")"
		}
	}
	c.tl.Add(f.Start, "chaos", "FAULT #%d %s%s: %s", f.ID, f.Kind, where, f.Detail)
	fmt.Fprintf(c.o.Progress, "%s  #%-3d %-17s%s: %s\n", c.rel(f.Start), f.ID, f.Kind, where, f.Detail)
}

// finish marks f removed now.
func (c *chaosRun) finish(f *Fault, err error, format string, args ...any) {
	now := time.Now()
	c.mu.Lock()
	f.End = now
	if err != nil {
		f.Err = err.Error()
	}
	delete(c.active, f.ID)
	switch {
	case f.Kind.membership():
		c.lastMembership = now
		if f.Kind.partition() {
			c.lastHeal = now
		}
	case f.Kind.ec2():
		c.lastEC2 = now
	}
	c.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		msg += fmt.Sprintf(" (error: %v)", err)
		c.problem("fault #%d %s: %v", f.ID, f.Kind, err)
	}
	c.tl.Add(now, "chaos", "END #%d %s: %s", f.ID, f.Kind, msg)
	fmt.Fprintf(c.o.Progress, "%s  #%-3d %-17s ended after %.1fs: %s\n", c.rel(now), f.ID, f.Kind, now.Sub(f.Start).Seconds(), msg)
}

// hold waits d, or less when the fault phase ends.
func hold(ctx context.Context, d time.Duration) { _ = sleepCtx(ctx, d) }

// runMembership injects a victim fault or a partition, holds it and removes it. Removal
// always completes, with a context of its own, even when the phase ends.
func (c *chaosRun) runMembership(ctx context.Context, f *Fault, s faultSpec) {
	bg, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := f.Host
	if f.Kind.victim() {
		mu := c.hostMu[h]
		mu.Lock()
		defer mu.Unlock()
	}
	var err error
	switch f.Kind {
	case FaultHardKill:
		c.begin(f, "links down, agent SIGKILLed; revived after %s", s.hold.Round(100*time.Millisecond))
		// Recorded first: the driver's record may run a few milliseconds ahead of the kill,
		// never behind it.
		c.truth.update(h, func(r *hostRecord) { r.linksUp, r.agent = false, nil })
		_, err = c.l.KillHost(bg, h)
		hold(ctx, s.hold)
		for _, dev := range []string{"priv0", "pub0"} {
			if e := setLink(bg, h, dev, true); e != nil && err == nil {
				err = e
			}
		}
		c.truth.update(h, func(r *hostRecord) { r.linksUp = true })
		if e := c.startAgent(bg, h, AgentVariant{}); e != nil && err == nil {
			err = e
		}
		c.finish(f, err, "links up, agent started")
	case FaultAgentKill:
		c.begin(f, "agent SIGKILLed, datapath left up; restarted after %s", s.hold.Round(100*time.Millisecond))
		c.killAgent(h)
		hold(ctx, s.hold)
		err = c.startAgent(bg, h, AgentVariant{})
		c.finish(f, err, "agent started")
	case FaultSigterm:
		c.begin(f, "SIGTERM: graceful stop; restarted %s after it exits", s.hold.Round(100*time.Millisecond))
		c.stopAgent(h)
		hold(ctx, s.hold)
		err = c.startAgent(bg, h, AgentVariant{})
		c.finish(f, err, "agent started")
	case FaultMasquerade:
		c.begin(f, "nftables table ip natganker deleted; the agent must put it back")
		err = deleteMasquerade(bg, h)
		if err == nil && !c.waitMasquerade(bg, h, time.Now(), 15*time.Second) {
			c.problem("the agent on %s did not restore its masquerade rule within 15s: restarting it", h)
			c.stopAgent(h)
			err = c.startAgent(bg, h, AgentVariant{})
		}
		c.finish(f, err, "masquerade back")
	case FaultPublicDown:
		c.begin(f, "pub0 down; up again after %s", s.hold.Round(100*time.Millisecond))
		c.truth.update(h, func(r *hostRecord) { r.publicUp = false })
		err = setLink(bg, h, "pub0", false)
		hold(ctx, s.hold)
		if e := setLink(bg, h, "pub0", true); e != nil && err == nil {
			err = e
		}
		c.truth.update(h, func(r *hostRecord) { r.publicUp = true })
		c.finish(f, err, "pub0 up")
	case FaultWrongKey:
		c.begin(f, "agent restarted with another gossip key for %s, then with the right one", s.hold.Round(100*time.Millisecond))
		c.stopAgent(h)
		err = c.startAgent(bg, h, AgentVariant{GossipKey: otherKey()})
		hold(ctx, s.hold)
		c.stopAgent(h)
		if e := c.startAgent(bg, h, AgentVariant{}); e != nil && err == nil {
			err = e
		}
		c.finish(f, err, "agent restarted with the cluster's key")
	case FaultClash:
		prio := DefaultPriority(Peer(h))
		c.begin(f, "agent restarted with priority %d (its peer's; ties go to the lower instance id: %s) for %s, then with %d",
			prio, c.tieWinner(), s.hold.Round(100*time.Millisecond), DefaultPriority(h))
		c.stopAgent(h)
		err = c.startAgent(bg, h, AgentVariant{Priority: prio})
		hold(ctx, s.hold)
		c.stopAgent(h)
		if e := c.startAgent(bg, h, AgentVariant{}); e != nil && err == nil {
			err = e
		}
		c.finish(f, err, "agent restarted with priority %d", DefaultPriority(h))
	case FaultPartition:
		c.begin(f, "each NAT drops every packet from the other for %s", s.hold.Round(100*time.Millisecond))
		for _, x := range []string{Nat1, Nat2} {
			c.truth.setDrop(x, true)
			if e := dropFromPeer(bg, x, true); e != nil && err == nil {
				err = e
			}
		}
		hold(ctx, s.hold)
		for _, x := range []string{Nat1, Nat2} {
			if e := dropFromPeer(bg, x, false); e != nil && err == nil {
				err = e
			}
			c.truth.setDrop(x, false)
		}
		c.finish(f, err, "healed")
	case FaultOneWay:
		c.begin(f, "%s drops every packet from %s for %s (%s still hears %s)", h, Peer(h), s.hold.Round(100*time.Millisecond), Peer(h), h)
		c.truth.setDrop(h, true)
		err = dropFromPeer(bg, h, true)
		hold(ctx, s.hold)
		if e := dropFromPeer(bg, h, false); e != nil && err == nil {
			err = e
		}
		c.truth.setDrop(h, false)
		c.finish(f, err, "healed")
	}
}

// waitMasquerade waits until the referee, having seen host's masquerade rule gone after
// deleted, sees it back. A repair faster than the referee's sampling counts once two samples
// after the deletion show the rule.
func (c *chaosRun) waitMasquerade(ctx context.Context, host string, deleted time.Time, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	seenGone, after := false, 0
	for time.Now().Before(deadline) {
		for _, s := range c.ref.since(deleted) {
			if !s.Hosts[host].Masq {
				seenGone = true
			} else if seenGone || after >= 2 {
				return true
			} else {
				after++
			}
		}
		deleted = time.Now()
		if !sleepCtx(ctx, refereeInterval) {
			return false
		}
	}
	return false
}

// tieWinner names the NAT that wins a tie of priorities: the lower instance id.
func (c *chaosRun) tieWinner() string {
	if c.ids[Nat1] < c.ids[Nat2] {
		return Nat1
	}
	return Nat2
}

func otherKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// The loss track: random loss between the NATs, one rate at a time.
func (c *chaosRun) lossTrack(ctx context.Context, rng *mrand.Rand) {
	for ctx.Err() == nil {
		k, ok := c.draw(rng, []FaultKind{FaultLoss})
		s := faultSpec{kind: k, gap: uniform(rng, 2*time.Second, 20*time.Second), loss: 1 + rng.IntN(20),
			hold: uniform(rng, 5*time.Second, 30*time.Second)}
		if !ok || !sleepCtx(ctx, s.gap) {
			return
		}
		f := c.waitTurn(ctx, s)
		if f == nil {
			return
		}
		bg, cancel := context.WithTimeout(context.Background(), time.Minute)
		c.begin(f, "each NAT drops %d%% of the packets from the other, at random, for %s", s.loss, s.hold.Round(100*time.Millisecond))
		var err error
		for _, x := range []string{Nat1, Nat2} {
			if e := lossFromPeer(bg, x, s.loss); e != nil && err == nil {
				err = e
			}
		}
		c.truth.setLoss(s.loss)
		hold(ctx, s.hold)
		for _, x := range []string{Nat1, Nat2} {
			if e := lossFromPeer(bg, x, 0); e != nil && err == nil {
				err = e
			}
		}
		c.truth.setLoss(0)
		c.finish(f, err, "no loss")
		cancel()
	}
}

// The EC2 track: latency, errors, throttling, outages and stale reads between the NATs and
// moto, one at a time.
func (c *chaosRun) ec2Track(ctx context.Context, rng *mrand.Rand) {
	for ctx.Err() == nil {
		k, ok := c.draw(rng, []FaultKind{FaultEC2Latency, FaultEC25xx, FaultEC2Throttle, FaultEC2Outage, FaultEC2Stale})
		s := faultSpec{kind: k, gap: uniform(rng, 15*time.Second, 45*time.Second), hold: uniform(rng, 2*time.Second, 12*time.Second)}
		lat := uniform(rng, 100*time.Millisecond, 1500*time.Millisecond).Round(10 * time.Millisecond)
		jitter := uniform(rng, 0, 500*time.Millisecond).Round(10 * time.Millisecond)
		frac := 0.2 + 0.8*rng.Float64()
		code := []string{"InternalError", "Unavailable"}[rng.IntN(2)]
		hang := rng.IntN(2) == 0
		stale := uniform(rng, time.Second, 5*time.Second).Round(100 * time.Millisecond)
		switch k {
		case FaultEC2Latency:
			s.ec2 = EC2Fault{Latency: lat, Jitter: jitter}
		case FaultEC25xx:
			s.ec2 = EC2Fault{Fraction: frac, Code: code}
		case FaultEC2Throttle:
			s.ec2 = EC2Fault{Fraction: frac, Code: "RequestLimitExceeded"}
		case FaultEC2Outage:
			s.ec2 = EC2Fault{Outage: !hang, Hang: hang}
		case FaultEC2Stale:
			s.ec2 = EC2Fault{Stale: stale}
			s.hold += 5 * time.Second
		}
		if !ok || !sleepCtx(ctx, s.gap) {
			return
		}
		f := c.waitTurn(ctx, s)
		if f == nil {
			return
		}
		c.begin(f, "%s for %s", s.ec2, s.hold.Round(100*time.Millisecond))
		c.truth.setEC2(string(k))
		err := c.l.SetEC2Fault(s.ec2)
		hold(ctx, s.hold)
		if e := c.l.SetEC2Fault(EC2Fault{}); e != nil && err == nil {
			err = e
		}
		c.truth.setEC2("")
		c.finish(f, err, "EC2 answers normally")
	}
}

// The metadata track: a NAT's metadata mock stopped for a while, never while that NAT's
// agent is to be restarted.
func (c *chaosRun) imdsTrack(ctx context.Context, rng *mrand.Rand) {
	for ctx.Err() == nil {
		k, ok := c.draw(rng, []FaultKind{FaultIMDSDown})
		s := faultSpec{kind: k, gap: uniform(rng, 10*time.Second, 40*time.Second), pick: rng.Float64(),
			hold: uniform(rng, 5*time.Second, 20*time.Second)}
		if !ok || !sleepCtx(ctx, s.gap) {
			return
		}
		f := c.waitTurn(ctx, s)
		if f == nil {
			return
		}
		c.begin(f, "metadata mock stopped for %s (the agent reads it only when it starts)", s.hold.Round(100*time.Millisecond))
		c.truth.update(f.Host, func(r *hostRecord) { r.imds = false })
		c.l.StopIMDS(f.Host)
		hold(ctx, s.hold)
		bg, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := c.l.StartIMDS(bg, f.Host)
		cancel()
		c.truth.update(f.Host, func(r *hostRecord) { r.imds = true })
		c.finish(f, err, "metadata mock running")
	}
}
