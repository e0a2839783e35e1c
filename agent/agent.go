// Package agent keeps exactly one healthy NAT instance the owner of each group: it reads what
// EC2 reports, listens to gossip, and claims a group when the rules in Decide say so.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

// Deps are the agent's connections to the outside world.
type Deps struct {
	// Cloud is EC2.
	Cloud Cloud
	// Health checks the datapath; nil means always healthy.
	Health HealthChecker
	// Version is reported by status.
	Version string
}

const (
	// healthyChecksToRecover consecutive good checks make an unhealthy node healthy again,
	// so that a node repairing itself stays out long enough for a peer to take over.
	healthyChecksToRecover = 3
	// reconfirmAfter is the least time between two confirmation bursts at the same peer.
	reconfirmAfter = 200 * time.Millisecond
	// quietProbes is how many probe intervals without any sign of life from the owner make
	// this node start confirming before memberlist's suspicion timeout runs out, so that
	// the confirmation is ready when the death is declared.
	quietProbes = 2.5
	// confirmValidFor is how long a confirmation about an instance that never joined counts.
	confirmValidFor = 15 * time.Second
	// evalInterval paces decisions that depend on time passing (failback).
	evalInterval = 100 * time.Millisecond
	// handoverTimeout bounds how long a graceful shutdown waits for a peer to take over.
	handoverTimeout = 10 * time.Second
)

// Agent is one natganker node.
type Agent struct {
	cfg    *config.Config
	id     ec2.Identity
	deps   Deps
	logger hclog.Logger
	gossip *gossip.Gossip
	self   ec2.Self

	requests  chan func()
	observed  chan observeResult
	confirmed chan confirmResult
	claimed   chan claimResult
	checked   chan datapath.Health

	// Everything below is owned by the run goroutine.
	started      time.Time
	members      map[string]gossip.Member
	groups       []*groupState
	healthy      bool
	healthReason string
	goodChecks   int
	checking     bool
	leaving      bool
	confirms     map[string]*confirmState
	// lastGone is when each peer last dropped out of this node's view (dead or left).
	lastGone      map[string]time.Time
	publishedMeta string

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	runDone   chan struct{}
}

type groupState struct {
	cfg config.Group

	obs       ec2.Observation
	obsErr    error
	observed  bool
	observing bool
	fresh     bool
	owner     string
	ownerAt   time.Time

	displacedBy string
	// ownsHeard is when each peer, alive, first announced it owns this group.
	ownsHeard map[string]time.Time
	// problems are the EC2 findings already logged.
	problems      map[string]bool
	yielded       bool
	eligibleSince time.Time
	force         bool

	claiming  bool
	nextClaim time.Time
	failures  int
	trigger   time.Time
	lastKey   string
	waiters   []chan error
	last      *TakeoverView
}

type confirmState struct {
	warned  time.Time
	running bool
	started time.Time
	done    time.Time
	dead    bool
	took    time.Duration
}

type observeResult struct {
	g   *groupState
	obs ec2.Observation
	err error
}

type confirmResult struct {
	name  string
	alive bool
	err   error
	took  time.Duration
}

type claimResult struct {
	g       *groupState
	view    TakeoverView
	report  ec2.Report
	err     error
	from    string
	started time.Time
}

// New prepares an agent for the node described by id. It starts nothing.
func New(cfg *config.Config, id ec2.Identity, deps Deps, logger hclog.Logger) (*Agent, error) {
	if deps.Cloud == nil {
		return nil, errors.New("agent: no EC2 client")
	}
	if id.InstanceID == "" {
		return nil, errors.New("agent: instance id unknown")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Agent{
		cfg: cfg, id: id, deps: deps, logger: logger.Named("agent"),
		self:      ec2.Self{InstanceID: id.InstanceID},
		requests:  make(chan func()),
		observed:  make(chan observeResult),
		confirmed: make(chan confirmResult),
		claimed:   make(chan claimResult),
		checked:   make(chan datapath.Health),
		members:   make(map[string]gossip.Member),
		confirms:  make(map[string]*confirmState),
		lastGone:  make(map[string]time.Time),
		healthy:   true,
		runDone:   make(chan struct{}),
	}
	for _, g := range cfg.Groups {
		if g.Target == config.TargetENI {
			a.self.TargetENI = true
		}
		a.groups = append(a.groups, &groupState{cfg: g, ownsHeard: make(map[string]time.Time), problems: make(map[string]bool)})
	}
	gc := cfg.Gossip
	advertise := gc.AdvertiseAddr
	if advertise == "" {
		advertise = id.LocalIPv4
	}
	g, err := gossip.New(gossip.Config{
		Name: id.InstanceID, BindAddr: gc.BindAddr, BindPort: gc.BindPort,
		AdvertiseAddr: advertise, AdvertisePort: gc.AdvertisePort,
		Peers: gc.Peers, EncryptKey: gc.EncryptKey,
		ProbeInterval: gc.ProbeInterval, ProbeTimeout: gc.ProbeTimeout, SuspicionMult: gc.SuspicionMult,
		GossipInterval: gc.GossipInterval, RejoinInterval: gc.RejoinInterval,
		ConfirmProbes: gc.ConfirmProbes, ConfirmTimeout: gc.ConfirmTimeout,
		Meta: a.meta(),
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.gossip = g
	return a, nil
}

// Start checks the datapath, joins the cluster and starts the agent's loops.
func (a *Agent) Start(ctx context.Context) error {
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.started = time.Now()
	st, err := loadState(a.cfg.Control.StateFile, a.id.InstanceID)
	if err != nil {
		a.logger.Warn("ignoring the saved state", "error", err)
	}
	for _, g := range a.groups {
		g.eligibleSince = a.started
		if peer := st.Displaced[g.cfg.Name]; peer != "" {
			g.displacedBy = peer
			a.logger.Warn("before the restart a peer this node could not see took the group: not taking it back while that peer runs and stays unreachable",
				"group", g.cfg.Name, "peer", peer)
		}
	}
	if a.deps.Health != nil {
		if r, ok := a.deps.Health.(Repairer); ok && a.cfg.Datapath.Manage {
			if err := r.Ensure(ctx); err != nil {
				a.logger.Error("could not set up the datapath", "error", err)
			}
		}
		h := a.deps.Health.Check(ctx)
		a.healthy, a.healthReason = h.Healthy, h.Reason
		if !h.Healthy {
			a.logger.Warn("datapath unhealthy at start: this node will not own groups", "reason", h.Reason)
		}
	}
	err = a.gossip.SetMeta(a.meta())
	if err == nil {
		err = a.gossip.Start(a.ctx)
	}
	if err != nil {
		// Nothing runs yet: leave the agent as if never started, so Close returns at once.
		a.cancel()
		a.cancel = nil
		return err
	}
	a.logger.Info("started", "node", a.id.InstanceID, "gossip", a.gossip.LocalAddr(), "groups", a.groupNames(), "peers", a.cfg.Gossip.Peers)
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		defer close(a.runDone)
		a.run(a.ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.disableSourceDestCheck(a.ctx)
	}()
	return nil
}

// Close hands every group this node owns to a peer (yield, then a graceful leave), then
// stops. Safe to call more than once.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		if a.cancel == nil {
			return
		}
		a.handover()
		if lerr := a.gossip.Leave(2 * time.Second); lerr != nil {
			a.logger.Warn("graceful leave incomplete", "error", lerr)
		}
		a.cancel()
		a.wg.Wait()
		err = a.gossip.Close()
		a.logger.Info("stopped")
	})
	return err
}

// handover announces the shutdown and waits, within handoverTimeout, until EC2 shows that
// every group this node owned has moved to a peer.
func (a *Agent) handover() {
	var meta gossip.Meta
	var owned []string
	var peer bool
	if err := a.do(context.Background(), func() { a.leaving = true }); err != nil {
		return
	}
	// A claim already sent to EC2 may still land: wait for it, so that what this node owns
	// is known before deciding whether to wait for a peer.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for settled := false; !settled; <-tick.C {
		if err := a.do(context.Background(), func() {
			settled = true
			for _, g := range a.groups {
				settled = settled && !g.claiming
			}
			meta = a.meta()
			owned = a.ownedGroups()
			peer = a.anyEligiblePeer()
		}); err != nil {
			return
		}
	}
	if err := a.gossip.PublishMeta(meta, time.Second); err != nil {
		a.logger.Warn("could not announce the shutdown", "error", err)
	}
	if len(owned) == 0 {
		return
	}
	if !peer {
		a.logger.Warn("shutting down with no eligible peer: groups stay where they are", "groups", owned)
		return
	}
	a.logger.Info("handing over before shutdown", "groups", owned)
	deadline := time.Now().Add(handoverTimeout)
	tick.Reset(250 * time.Millisecond)
	for time.Now().Before(deadline) {
		<-tick.C
		var still []string
		if err := a.do(context.Background(), func() {
			still = a.ownedGroups()
			for _, g := range a.groups {
				a.observe(g)
			}
		}); err != nil {
			return
		}
		if len(still) == 0 {
			a.logger.Info("handover complete")
			return
		}
	}
	a.logger.Warn("no peer took over in time; shutting down anyway", "timeout", handoverTimeout)
}

// do runs fn on the run goroutine and waits for it.
func (a *Agent) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case a.requests <- func() { fn(); close(done) }:
	case <-a.runDone:
		return errors.New("agent is stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Agent) run(ctx context.Context) {
	evalTick := time.NewTicker(evalInterval)
	defer evalTick.Stop()
	observeTick := time.NewTicker(a.cfg.EC2.ReconcileInterval)
	defer observeTick.Stop()
	checkEvery := a.cfg.Datapath.CheckInterval
	if checkEvery <= 0 {
		checkEvery = time.Second
	}
	checkTick := time.NewTicker(checkEvery)
	defer checkTick.Stop()

	for _, g := range a.groups {
		a.observe(g)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-a.gossip.Events():
			a.onEvent(e)
		case r := <-a.observed:
			a.onObserved(r)
		case r := <-a.confirmed:
			a.onConfirmed(r)
		case r := <-a.claimed:
			a.onClaimed(r)
		case h := <-a.checked:
			a.onChecked(h)
		case fn := <-a.requests:
			fn()
		case <-evalTick.C:
		case <-observeTick.C:
			for _, g := range a.groups {
				a.observe(g)
			}
		case <-checkTick.C:
			a.check()
		}
		a.evaluate()
	}
}

func (a *Agent) onEvent(e gossip.Event) {
	if e.Member.Name == a.id.InstanceID {
		return
	}
	prev, known := a.members[e.Member.Name]
	a.members[e.Member.Name] = e.Member
	m := e.Member
	if m.State != gossip.StateAlive {
		a.lastGone[m.Name] = e.At
	}
	for _, g := range a.groups {
		owns := m.State == gossip.StateAlive && m.Meta.Groups[g.cfg.Name].Owns
		if _, heard := g.ownsHeard[m.Name]; owns && !heard {
			g.ownsHeard[m.Name] = e.At
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
	if m.State == gossip.StateAlive {
		for _, g := range a.groups {
			if g.displacedBy == m.Name {
				a.logger.Info("can see the peer that took over again: failback rules apply", "group", g.cfg.Name, "peer", m.Name)
				a.setDisplaced(g, "")
			}
		}
	}
}

// observe reads the group from EC2 in the background, unless a read is already running.
func (a *Agent) observe(g *groupState) {
	if g.observing {
		return
	}
	g.observing = true
	spec := a.spec(g)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, 4*a.cfg.EC2.CallTimeout)
		defer cancel()
		obs, err := a.deps.Cloud.Observe(ctx, spec, a.self)
		select {
		case a.observed <- observeResult{g: g, obs: obs, err: err}:
		case <-a.ctx.Done():
		}
	}()
}

func (a *Agent) spec(g *groupState) ec2.Group {
	members := []string{a.id.InstanceID}
	for name := range a.members {
		members = append(members, name)
	}
	return GroupSpec(g.cfg, members)
}

func (a *Agent) onObserved(r observeResult) {
	g := r.g
	g.observing = false
	if r.err != nil {
		if g.obsErr == nil || g.obsErr.Error() != r.err.Error() {
			a.logger.Error("could not read the group from EC2", "group", g.cfg.Name, "error", r.err)
		}
		g.obsErr = r.err
		return
	}
	if g.obsErr != nil {
		a.logger.Info("EC2 readable again", "group", g.cfg.Name)
	}
	g.obsErr = nil
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
	now := time.Now()
	if !g.observed || owner != g.owner {
		if g.observed {
			a.logger.Info("owner changed in EC2", "group", g.cfg.Name, "from", orNone(g.owner), "to", orNone(owner))
			if g.owner == a.id.InstanceID && owner != "" && owner != a.id.InstanceID && a.tookUnseen(g, owner, now) {
				a.setDisplaced(g, owner)
				a.logger.Warn("a peer this node cannot see took the group: partition suspected; not taking it back while that peer runs",
					"group", g.cfg.Name, "peer", owner)
			}
		}
		g.owner, g.ownerAt = owner, now
	}
	g.obs, g.observed, g.fresh = r.obs, true, true
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
	gone := a.lastGone[peer]
	return !gone.IsZero() && !gone.Before(since) && !gone.After(learned)
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

// drift lists what in a group this node owns does not point at this node.
func (a *Agent) drift(g *groupState) []string {
	var out []string
	for _, r := range g.obs.Routes {
		ok := r.State == ec2.RouteActive && r.InstanceID == a.id.InstanceID
		if a.self.TargetENI {
			self := g.obs.Instances[a.id.InstanceID]
			ok = r.State == ec2.RouteActive && r.ENIID != "" && r.ENIID == self.ENIID
		}
		if !ok && r.State == ec2.RouteActive && a.takingOver(g, r.InstanceID) {
			// The peer is taking the group over (its claim moves the Elastic IP at the same
			// time): not drift to fight.
			ok = true
		}
		if !ok {
			target := firstNonEmpty(r.InstanceID, r.ENIID, r.OtherTarget)
			out = append(out, fmt.Sprintf("%s %s is %s%s", r.RouteTableID, r.Destination, r.State, orEmpty(" via ", target)))
		}
	}
	return out
}

// takingOver reports whether peer, which a route of g points at, may be in the middle of
// taking g: it is alive and either says it owns g or outranks this node there.
func (a *Agent) takingOver(g *groupState, peer string) bool {
	m, ok := a.members[peer]
	if !ok || peer == "" || m.State != gossip.StateAlive {
		return false
	}
	p := peerOf(m, g.cfg.Name)
	if gm, ok := m.Meta.Groups[g.cfg.Name]; ok && gm.Owns {
		return true
	}
	return p.Eligible() && (p.Priority > g.cfg.Priority || (p.Priority == g.cfg.Priority && p.Name < a.id.InstanceID))
}

func (a *Agent) isAlive(name string) bool {
	m, ok := a.members[name]
	return ok && m.State == gossip.StateAlive
}

func (a *Agent) evaluate() {
	now := time.Now()
	for _, g := range a.groups {
		v := a.view(g, now)
		verdict := Decide(v)
		g.fresh = false
		if g.force && !g.claiming {
			if !a.healthy || a.leaving {
				a.finishWaiters(g, fmt.Errorf("this node is unhealthy (%s) or shutting down: not taking over", a.healthReason))
				g.force = false
			} else {
				verdict = Verdict{Action: ActClaim, Desired: verdict.Desired, Reason: "operator asked for a takeover"}
			}
		}
		key := verdict.Action.String() + "|" + verdict.Desired
		if key != g.lastKey {
			g.lastKey = key
			if verdict.Action == ActNone {
				g.trigger = time.Time{}
			} else if g.trigger.IsZero() {
				g.trigger = now
				if m, ok := a.members[g.owner]; ok && m.State != gossip.StateAlive {
					g.trigger = m.Since
				}
			}
			a.logger.Debug("decision", "group", g.cfg.Name, "action", verdict.Action.String(), "desired", orNone(verdict.Desired), "reason", verdict.Reason)
		}
		switch verdict.Action {
		case ActClaim:
			a.claim(g, verdict.Reason, now)
		case ActConfirm:
			a.confirm(g, now)
		case ActNone:
			if a.ownerQuiet(g, v, now) {
				a.confirm(g, now)
			}
		}
	}
	a.publish()
}

func (a *Agent) view(g *groupState, now time.Time) View {
	v := View{
		Now: now, Self: a.id.InstanceID, Peers: make(map[string]Peer, len(a.members)+1),
		ManualFailback: g.cfg.Failback == config.FailbackManual, FailbackDelay: g.cfg.FailbackDelay,
		Observed: g.observed, Owner: g.owner, OwnerSince: g.ownerAt,
		SelfEligibleSince: g.eligibleSince, DisplacedBy: g.displacedBy,
		StartupGraceOver: now.Sub(a.started) >= a.startupGrace(),
	}
	for name, m := range a.members {
		v.Peers[name] = peerOf(m, g.cfg.Name)
	}
	v.Peers[a.id.InstanceID] = Peer{
		Name: a.id.InstanceID, Alive: true, Since: a.started, Healthy: a.healthy, Reason: a.healthReason,
		InGroup: true, Priority: g.cfg.Priority, Yielded: g.yielded, Leaving: a.leaving,
	}
	if g.owner != "" && g.owner != a.id.InstanceID {
		st := g.obs.Instances[g.owner].State
		v.OwnerRunning = st == "" || st == ec2.InstanceStateUnknown || st == "pending" || st == "running"
		if c, ok := a.confirms[g.owner]; ok && !c.running && c.dead {
			if _, known := a.members[g.owner]; known {
				// Only a burst sent after the last sign of life counts.
				v.OwnerConfirmedDead = c.started.After(a.gossip.LastContact(g.owner))
			} else {
				v.OwnerConfirmedDead = now.Sub(c.done) < confirmValidFor
			}
		}
	}
	if g.owner == a.id.InstanceID && g.fresh {
		if d := a.drift(g); len(d) > 0 {
			v.Drift, v.DriftReason = true, strings.Join(d, "; ")
		}
	}
	return v
}

func peerOf(m gossip.Member, group string) Peer {
	p := Peer{
		Name: m.Name, Alive: m.State == gossip.StateAlive, Left: m.State == gossip.StateLeft, Since: m.Since,
		Healthy: m.MetaErr == "" && m.Meta.Healthy, Reason: m.Meta.Reason, Leaving: m.Meta.Leaving,
	}
	if m.MetaErr != "" {
		p.Reason = "unreadable metadata: " + m.MetaErr
	}
	if gm, ok := m.Meta.Groups[group]; ok && m.MetaErr == "" {
		p.InGroup, p.Priority, p.Yielded = true, gm.Priority, gm.Yielded
	}
	return p
}

// ownerQuiet reports whether the owner, still alive as far as memberlist knows, has not
// answered for quietProbes probe intervals while this node would be the one to replace it.
func (a *Agent) ownerQuiet(g *groupState, v View, now time.Time) bool {
	if g.owner == "" || g.owner == a.id.InstanceID || !a.isAlive(g.owner) {
		return false
	}
	last := a.gossip.LastContact(g.owner)
	if last.IsZero() || now.Sub(last) < time.Duration(quietProbes*float64(a.cfg.Gossip.ProbeInterval)) {
		return false
	}
	without := make(map[string]Peer, len(v.Peers))
	for name, p := range v.Peers {
		if name != g.owner {
			without[name] = p
		}
	}
	return Desired(without) == a.id.InstanceID
}

// confirm probes the group's owner directly, unless a burst is running or just ran.
func (a *Agent) confirm(g *groupState, now time.Time) {
	name := g.owner
	c := a.confirms[name]
	if c == nil {
		c = &confirmState{}
		a.confirms[name] = c
	}
	if c.running || now.Sub(c.done) < reconfirmAfter {
		return
	}
	if _, known := a.members[name]; known && c.dead && c.started.After(a.gossip.LastContact(name)) {
		// Still silent since a burst that found it gone: that verdict stands.
		return
	}
	addr := ""
	if m, ok := a.members[name]; ok {
		addr = m.Addr
	} else if in, ok := g.obs.Instances[name]; ok && in.PrivateIP != "" {
		addr = net.JoinHostPort(in.PrivateIP, strconv.Itoa(a.cfg.Gossip.AdvertisePort))
	}
	if addr == "" {
		// Nothing to probe: an instance with no address cannot be forwarding traffic.
		c.dead, c.started, c.done = true, now, now
		return
	}
	c.running, c.started = true, now
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		alive, err := a.gossip.Confirm(a.ctx, name, addr)
		select {
		case a.confirmed <- confirmResult{name: name, alive: alive, err: err, took: time.Since(now)}:
		case <-a.ctx.Done():
		}
	}()
}

func (a *Agent) onConfirmed(r confirmResult) {
	c := a.confirms[r.name]
	c.running, c.done, c.took = false, time.Now(), r.took
	c.dead = !r.alive && r.err == nil
	switch {
	case r.err != nil:
		a.logger.Error("could not probe peer", "peer", r.name, "error", r.err)
	case a.isAlive(r.name):
		// An early burst while memberlist still counts the owner alive: only a lead.
		a.logger.Debug("owner quiet; direct probes", "peer", r.name, "answered", r.alive, "probe_ms", r.took.Milliseconds())
	case r.alive:
		// Once per time gossip loses the owner, not once per burst.
		if !c.warned.After(a.lastGone[r.name]) {
			c.warned = c.done
			a.logger.Warn("gossip reports the owner gone but it answers direct probes: not taking over",
				"peer", r.name, "probe_ms", r.took.Milliseconds())
		}
	default:
		a.logger.Info("owner confirmed unreachable by direct probes", "peer", r.name, "probe_ms", r.took.Milliseconds())
	}
}

// claim points the group at this node in the background, unless a claim is running or the
// last one failed too recently.
func (a *Agent) claim(g *groupState, reason string, now time.Time) {
	if g.claiming || now.Before(g.nextClaim) {
		return
	}
	g.claiming = true
	from := g.owner
	trigger := g.trigger
	if trigger.IsZero() {
		trigger = now
	}
	view := TakeoverView{Group: g.cfg.Name, From: from, To: a.id.InstanceID, Reason: reason, Started: now, Detected: now.Sub(trigger)}
	if c, ok := a.confirms[from]; ok && !c.running && c.dead && c.started.After(trigger.Add(-time.Millisecond)) {
		view.Confirmed = c.took
	}
	spec := a.spec(g)
	// Taking over from another instance is urgent: act on the last read rather than read
	// again first, when that read is recent. Repairs and retries read first.
	var known *ec2.Observation
	if from != a.id.InstanceID && g.obsErr == nil && g.failures == 0 && now.Sub(g.obs.ReadAt) < 2*a.cfg.EC2.ReconcileInterval {
		obs := g.obs
		known = &obs
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, 6*a.cfg.EC2.CallTimeout)
		defer cancel()
		var rep ec2.Report
		var err error
		if known != nil {
			rep, err = a.deps.Cloud.ClaimKnown(ctx, spec, a.self, *known)
		} else {
			rep, err = a.deps.Cloud.Claim(ctx, spec, a.self)
		}
		if err == nil {
			err = rep.Err()
		}
		select {
		case a.claimed <- claimResult{g: g, view: view, report: rep, err: err, from: from, started: now}:
		case <-a.ctx.Done():
		}
	}()
}

func (a *Agent) onClaimed(r claimResult) {
	g := r.g
	g.claiming, g.force = false, false
	v := r.view
	v.EIPMoved, v.RoutesMoved, v.Verified = r.report.EIPDone, r.report.RoutesDone, r.report.Verified
	args := []any{
		"group", v.Group, "from", orNone(v.From), "to", v.To, "reason", v.Reason,
		"detected_at", r.started.Add(-v.Detected).UTC().Format(time.RFC3339Nano),
		"detected_ms", v.Detected.Milliseconds(), "confirmed_ms", v.Confirmed.Milliseconds(),
		"eip_ms", v.EIPMoved.Milliseconds(), "routes_ms", v.RoutesMoved.Milliseconds(),
		"verified_ms", v.Verified.Milliseconds(), "routes", len(r.report.Routes),
	}
	if r.err != nil {
		v.Error = r.err.Error()
		g.failures++
		backoff := time.Duration(1<<min(g.failures-1, 4)) * time.Second
		g.nextClaim = time.Now().Add(backoff)
		a.logger.Error("takeover failed; will retry", append(args, "error", r.err, "retry_in", backoff.String())...)
	} else {
		g.failures = 0
		if r.from != a.id.InstanceID || r.report.EIP.Action == ec2.ActionAssociated {
			a.logger.Info("takeover", args...)
		} else {
			a.logger.Info("repaired", args...)
		}
		if g.owner != a.id.InstanceID {
			g.owner, g.ownerAt = a.id.InstanceID, time.Now()
		}
		a.setDisplaced(g, "")
	}
	if r.from != a.id.InstanceID || r.err != nil || r.report.EIP.Action == ec2.ActionAssociated {
		g.last = &v
	}
	a.finishWaiters(g, r.err)
	a.observe(g)
}

func (a *Agent) finishWaiters(g *groupState, err error) {
	for _, w := range g.waiters {
		w <- err
	}
	g.waiters = nil
}

// check runs a datapath health check in the background; when the datapath is managed and
// the last check failed, it is repaired first.
func (a *Agent) check() {
	if a.deps.Health == nil || a.checking {
		return
	}
	a.checking = true
	repair := !a.healthy || a.goodChecks < healthyChecksToRecover
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, 2*time.Second)
		defer cancel()
		if r, ok := a.deps.Health.(Repairer); ok && a.cfg.Datapath.Manage && repair {
			if err := r.Ensure(ctx); err != nil && ctx.Err() == nil {
				a.logger.Error("could not repair the datapath", "error", err)
			}
		}
		h := a.deps.Health.Check(ctx)
		select {
		case a.checked <- h:
		case <-a.ctx.Done():
		}
	}()
}

func (a *Agent) onChecked(h datapath.Health) {
	a.checking = false
	if !h.Healthy {
		if a.healthy {
			a.logger.Warn("datapath unhealthy: this node gives up its groups", "reason", h.Reason)
		}
		a.healthy, a.healthReason, a.goodChecks = false, h.Reason, 0
		return
	}
	a.goodChecks++
	if !a.healthy && a.goodChecks >= healthyChecksToRecover {
		a.logger.Info("datapath healthy again")
		a.healthy, a.healthReason = true, ""
		now := time.Now()
		for _, g := range a.groups {
			g.eligibleSince = now
		}
	}
}

// meta is what this node tells its peers.
func (a *Agent) meta() gossip.Meta {
	m := gossip.Meta{Healthy: a.healthy, Reason: a.healthReason, Leaving: a.leaving, Groups: make(map[string]gossip.GroupMeta)}
	for _, g := range a.groups {
		m.Groups[g.cfg.Name] = gossip.GroupMeta{Priority: g.cfg.Priority, Yielded: g.yielded || a.leaving, Owns: g.owner == a.id.InstanceID}
	}
	return m
}

func (a *Agent) publish() {
	m := a.meta()
	key := fmt.Sprintf("%+v", m)
	if key == a.publishedMeta {
		return
	}
	if err := a.gossip.SetMeta(m); err != nil {
		a.logger.Error("could not publish metadata", "error", err)
		return
	}
	a.publishedMeta = key
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

func (a *Agent) anyEligiblePeer() bool {
	for _, g := range a.groups {
		for name, m := range a.members {
			if name != a.id.InstanceID && peerOf(m, g.cfg.Name).Eligible() {
				return true
			}
		}
	}
	return false
}

func (a *Agent) groupNames() []string {
	var out []string
	for _, g := range a.groups {
		out = append(out, g.cfg.Name)
	}
	return out
}

// disableSourceDestCheck lets this instance forward others' traffic; it retries until EC2
// agrees, because a NAT with the check on silently drops everything it should forward.
func (a *Agent) disableSourceDestCheck(ctx context.Context) {
	delay := time.Second
	for {
		cctx, cancel := context.WithTimeout(ctx, 4*a.cfg.EC2.CallTimeout)
		err := a.deps.Cloud.DisableSourceDestCheck(cctx, a.id.InstanceID)
		cancel()
		if err == nil {
			a.logger.Debug("source/destination check is off", "instance", a.id.InstanceID)
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.logger.Error("could not turn off the source/destination check; retrying", "error", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
