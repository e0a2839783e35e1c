package agent

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natganker/natganker/agent/conntrack"
	"github.com/natganker/natganker/gossip"
)

// FlowSource is the kernel's table of masqueraded flows; *conntrack.Kernel implements it.
type FlowSource interface {
	// Check reports whether the kernel's table can be read at all.
	Check() error
	// Watch reports changes to the masqueraded flows until ctx ends; an error means
	// changes may have been missed.
	Watch(ctx context.Context, emit func(conntrack.Record)) error
	// Snapshot returns every masqueraded flow.
	Snapshot() ([]conntrack.Flow, error)
	// Install creates flows with their NAT mappings; a flow already there is counted in
	// existed, not an error.
	Install(flows []conntrack.Flow) (installed, existed int, err error)
	// LocalAddr is the address this node masquerades to, when its public interface has
	// one of its own.
	LocalAddr() (netip.Addr, bool)
	// Hold sets the guard that keeps the packets of the Elastic IP's connections from
	// leaving a node that does not hold it (conntrack.Guard); RemoveGuard takes it away.
	Hold(holding bool) error
	RemoveGuard() error
	// EIPSeen reports whether a packet of a guarded connection came in since the guard last
	// stopped holding: the Elastic IP reaches this node.
	EIPSeen() (bool, error)
}

// Messenger sends and receives messages between members, sealed with the cluster key;
// *gossip.Gossip implements it.
type Messenger interface {
	Send(name string, msg []byte, reliable bool) error
	OnMessage(fn func(msg []byte))
	Sealed() bool
}

// flowSync replicates masqueraded flows: while this node owns a group it sends its flows to
// every peer; every node keeps what its peers send, and installs the former owner's flows
// when it takes a group over, so that their connections go on through it.
type flowSync struct {
	src    FlowSource
	msg    Messenger
	table  *conntrack.Table
	rep    *conntrack.Replicator
	owning atomic.Bool

	mu        sync.Mutex
	badFrom   map[string]bool // senders whose messages could not be read, logged once
	installed atomic.Uint64

	// owningNow wakes run when this node starts owning a group: run sleeps while it owns
	// none, with no ticker.
	owningNow chan struct{}
	// guardWant carries the guard's latest wanted state to guardLoop (holding or not);
	// takeoverAt is when a peer last said it is taking a group from this node (unix ns).
	guardWant  chan bool
	takeoverAt atomic.Int64
}

// startFlowSync sets replication up when the configuration asks for it and it can work;
// it says in the log why not otherwise.
func (a *Agent) startFlowSync() {
	c := a.cfg.ConntrackSync
	if !c.Enabled {
		return
	}
	msg, ok := a.gossip.(Messenger)
	if !ok || a.deps.Flows == nil {
		return
	}
	if !msg.Sealed() {
		a.logger.Warn("connection sync is off: the cluster has no gossip key (gossip.encrypt_key), and flows are only sent sealed with it; established connections will break on a failover")
		return
	}
	if err := a.deps.Flows.Check(); err != nil {
		a.logger.Warn("connection sync is off: the kernel's connection tracking cannot be read over netlink (ctnetlink); established connections will break on a failover", "error", err)
		return
	}
	s := &flowSync{src: a.deps.Flows, msg: msg, table: conntrack.NewTable(c.MaxFlows), badFrom: map[string]bool{}, guardWant: make(chan bool, 1), owningNow: make(chan struct{}, 1)}
	s.rep = conntrack.NewReplicator(a.id.InstanceID, msg.Send)
	msg.OnMessage(func(b []byte) { s.receive(a, b) })
	a.flows = s
	a.spawn(func() { s.run(a) })
	a.spawn(func() { s.guardLoop(a) })
	a.logger.Info("connection sync on: masqueraded flows go to the peers while this node owns a group",
		"max_flows", c.MaxFlows, "flush_interval", c.FlushInterval.String(), "resync_interval", c.ResyncInterval.String())
}

// receive takes a message from a peer in; memberlist calls it on its packet path.
func (s *flowSync) receive(a *Agent, b []byte) {
	m, err := conntrack.Decode(b)
	if err == nil && m.Kind == conntrack.KindTakeover {
		// Before the peer's EC2 calls land: the connections' packets stop here at once.
		s.takeoverAt.Store(time.Now().UnixNano())
		s.setGuard(false)
		a.logger.Info("connection sync: a peer is taking a group over from this node; holding back its connections' packets here", "peer", m.Sender)
		return
	}
	if err == nil {
		err = s.table.Apply(m, time.Now())
	}
	if err != nil {
		s.mu.Lock()
		first := !s.badFrom[m.Sender]
		s.badFrom[m.Sender] = true
		s.mu.Unlock()
		if first {
			a.logger.Warn("a peer's connection sync message could not be read; its flows may be missing here until its next resync (is it another version?)", "peer", m.Sender, "error", err)
		}
	}
}

// peers are the members flows go to: every other live member.
func (a *Agent) flowPeers() []string {
	var out []string
	for _, m := range a.gossip.Members() {
		if m.Name != a.id.InstanceID && m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	return out
}

// run follows the kernel's flows while this node owns a group and sends them on.
func (s *flowSync) run(a *Agent) {
	c := a.cfg.ConntrackSync
	tick := time.NewTicker(c.FlushInterval)
	defer tick.Stop()
	var (
		stopWatch  context.CancelFunc
		watchErr   = make(chan error, 1)
		synced     = map[string]bool{} // peers that have had the whole table since owning began
		lastResync time.Time
	)
	defer func() {
		if stopWatch != nil {
			stopWatch()
		}
	}()
	resync := func(to []string) {
		flows, err := s.src.Snapshot()
		if err != nil {
			a.logger.Warn("connection sync: reading the flows for a resync failed", "error", err)
			return
		}
		if err := s.rep.Resync(to, flows); err != nil {
			a.logger.Debug("connection sync: resync incomplete", "error", err)
		}
		for _, p := range to {
			synced[p] = true
		}
	}
	for {
		select {
		case <-a.ctx.Done():
			return
		case err := <-watchErr:
			stopWatch = nil
			if a.ctx.Err() == nil && s.owning.Load() {
				a.logger.Warn("connection sync: following the kernel's flows stopped; resending the whole table", "error", err)
				clear(synced)
			}
		case <-tick.C:
		}
		owning := s.owning.Load()
		if !owning {
			if stopWatch != nil {
				stopWatch()
				stopWatch = nil
			}
			clear(synced)
			// Nothing to send until this node owns a group: no ticks meanwhile.
			tick.Stop()
			select {
			case <-a.ctx.Done():
				return
			case <-s.owningNow:
			}
			tick.Reset(c.FlushInterval)
			continue
		}
		if stopWatch == nil {
			ctx, cancel := context.WithCancel(a.ctx)
			stopWatch = cancel
			a.spawn(func() {
				err := s.src.Watch(ctx, s.rep.Note)
				if ctx.Err() == nil {
					if err == nil {
						err = errors.New("the watch ended")
					}
					watchErr <- err
				}
			})
			clear(synced)
		}
		peers := a.flowPeers()
		var fresh []string
		for _, p := range peers {
			if !synced[p] {
				fresh = append(fresh, p)
			}
		}
		now := time.Now()
		switch {
		case now.Sub(lastResync) >= c.ResyncInterval:
			resync(peers)
			lastResync = now
		case len(fresh) > 0:
			resync(fresh)
		}
		if _, err := s.rep.Flush(peers); err != nil {
			a.logger.Debug("connection sync: changes not sent to every peer", "error", err)
		}
	}
}

// guardPoll is how often guardLoop looks for a packet of a guarded connection while it waits
// for the Elastic IP to reach this node, at most guardSettleMax.
const (
	guardPoll      = 10 * time.Millisecond
	guardSettleMax = 3 * time.Second
)

// takeoverNoticeHold is how long after a peer said it is taking a group from this node the
// guard stays on here at least, unless this node's own claim succeeds after it.
const takeoverNoticeHold = time.Second

// setOwning records whether this node owns a group, and wakes run when it starts to.
func (s *flowSync) setOwning(owning bool) {
	if was := s.owning.Swap(owning); owning && !was {
		select {
		case s.owningNow <- struct{}{}:
		default:
		}
	}
}

// setGuard asks guardLoop for a state of the guard; the latest request wins.
func (s *flowSync) setGuard(holding bool) {
	select {
	case <-s.guardWant:
	default:
	}
	s.guardWant <- holding
}

// guardLoop applies the guard's wanted state, off the run loop, and removes the guard when
// the agent stops. Going from not holding to holding, it waits until a packet of a guarded
// connection has come in (the gateway forwards the Elastic IP here now), at most
// guardSettleMax: EC2 accepting the calls does not mean the address already reaches this node.
func (s *flowSync) guardLoop(a *Agent) {
	defer func() {
		if err := s.src.RemoveGuard(); err != nil {
			a.logger.Warn("connection sync: removing the connection guard failed", "table", "ip "+conntrack.GuardTable, "error", err)
		}
	}()
	var (
		failing bool
		set     bool // the guard was set at least once
		holding bool // as last set
	)
	apply := func(want bool) {
		err := s.src.Hold(want)
		switch {
		case err != nil && !failing:
			a.logger.Warn("connection sync: the connection guard could not be set; connections may be reset during an ownership move", "holding", want, "error", err)
		case err == nil && failing:
			a.logger.Info("connection sync: the connection guard is set again", "holding", want)
		}
		failing = err != nil
		if err == nil {
			set, holding = true, want
		}
	}
	for {
		var want bool
		select {
		case <-a.ctx.Done():
			return
		case want = <-s.guardWant:
		}
		if !want || !set || holding {
			apply(want)
			continue
		}
		// Not holding until now: wait for the Elastic IP to reach this node.
		started := time.Now()
		seen, still := s.waitEIP(a)
		switch {
		case a.ctx.Err() != nil:
			return
		case !still:
			apply(false)
			continue
		case !seen:
			a.logger.Info("connection sync: no packet of a taken-over connection came in; letting them through anyway", "waited", guardSettleMax.String())
		default:
			a.logger.Debug("connection sync: the Elastic IP reaches this node; connections let through", "after", time.Since(started).String())
		}
		apply(true)
	}
}

// waitEIP waits, at most guardSettleMax, until a packet of a guarded connection has come in.
// still is false when holding was withdrawn meanwhile, or the agent stops.
func (s *flowSync) waitEIP(a *Agent) (seen, still bool) {
	started := time.Now()
	tick := time.NewTicker(guardPoll)
	defer tick.Stop()
	for time.Since(started) < guardSettleMax {
		if ok, err := s.src.EIPSeen(); err == nil && ok {
			return true, true
		}
		select {
		case <-a.ctx.Done():
			return false, false
		case w := <-s.guardWant:
			if !w {
				return false, false
			}
		case <-tick.C:
		}
	}
	return false, true
}

// guard tells guardLoop whether this node holds an Elastic IP, once every group has been
// read from EC2 (before that the guard is left as it was: an owner's agent restarted must not
// hold back its own connections). A node handing over does not hold, nor does one a peer told
// it is taking a group over since EC2 last showed this node as the owner.
func (a *Agent) guard() {
	s := a.flows
	if s == nil {
		return
	}
	var shown time.Time // when EC2 last showed this node owning, or its claim succeeded
	for _, g := range a.groups {
		if !g.observed {
			return
		}
		if g.owner == a.id.InstanceID {
			shown = latest(shown, latest(g.obs.ReadAt, g.claimedAt))
		}
	}
	holding := a.ownsAny() && a.leave == nil
	// A read that began before the peer's message may end after it: only one well after
	// the message says the peer's takeover did not happen.
	if at := s.takeoverAt.Load(); holding && at != 0 && shown.Before(time.Unix(0, at).Add(takeoverNoticeHold)) {
		holding = false
	}
	s.setGuard(holding)
}

// tellTakeover tells the current owner, if it is alive, that this node is taking the group
// over, before the EC2 calls: its connections' packets must stop leaving through it before the
// Elastic IP can move away from it.
func (a *Agent) tellTakeover(from string) {
	s := a.flows
	if s == nil || from == "" || from == a.id.InstanceID || !a.isAlive(from) {
		return
	}
	b, err := conntrack.Encode(conntrack.Message{Kind: conntrack.KindTakeover, Sender: a.id.InstanceID})
	if err == nil {
		err = s.msg.Send(from, b, false)
	}
	if err != nil {
		a.logger.Debug("connection sync: telling the owner of the takeover failed", "owner", from, "error", err)
	}
}

// flowAddresses says which of a former owner's flows belong to group g, and where they go on
// this node. With one group, every flow, mapped to this node's own address on the public
// interface (own is invalid: installFlows asks the kernel). With several, each group's Elastic
// IP sits on a private address of its own (addresses.go) and its flows were source-NATed to
// it: the group's flows are those mapped to the address the last read of EC2 showed its Elastic
// IP on (old), and they go to this node's address for the group (own).
func (a *Agent) flowAddresses(g *groupState) (old, own netip.Addr) {
	if _, pin := addressIndex(a.cfg, g.cfg.Name); !pin || !g.observed {
		return netip.Addr{}, netip.Addr{}
	}
	old, _ = netip.ParseAddr(g.obs.EIP.PrivateIP)
	own, _ = netip.ParseAddr(g.obs.Address.Want)
	return old, own
}

// installFlows installs the flows the member called from masqueraded, with this node's own
// address, so that their replies are mapped back here once the Elastic IP and the routes
// have moved. With old valid, only the flows mapped to old are installed, mapped to own (see
// flowAddresses). It runs beside the claim's EC2 calls.
func (a *Agent) installFlows(from string, old, own netip.Addr) {
	s := a.flows
	if s == nil || from == "" || from == a.id.InstanceID {
		return
	}
	started := time.Now()
	all := s.table.Flows(from, started)
	flows := all[:0:0]
	for _, f := range all {
		if !old.IsValid() || f.NAT.Addr() == old {
			flows = append(flows, f)
		}
	}
	if len(flows) == 0 {
		a.logger.Info("connection sync: no flows of the former owner's to install", "from", from, "held", len(all))
		return
	}
	hasOwn := own.IsValid()
	if !hasOwn {
		own, hasOwn = s.src.LocalAddr()
	}
	for i := range flows {
		if hasOwn && flows[i].NAT.Addr() != own {
			flows[i].NAT = netip.AddrPortFrom(own, flows[i].NAT.Port())
		}
		flows[i].Mark = conntrack.FlowMark
	}
	installed, existed, err := s.src.Install(flows)
	s.installed.Add(uint64(installed))
	took := time.Since(started)
	if err != nil {
		a.logger.Warn("connection sync: some of the former owner's flows could not be installed; their connections will break",
			"from", from, "installed", installed, "already_there", existed, "of", len(flows), "took", took.String(), "error", err)
		return
	}
	a.logger.Info("connection sync: installed the former owner's flows", "from", from, "installed", installed, "already_there", existed, "took", took.String())
}

var (
	_ Messenger  = (*gossip.Gossip)(nil)
	_ FlowSource = (*conntrack.Kernel)(nil)
)
