// Package agent keeps exactly one healthy NAT instance the owner of each group: it reads what
// EC2 reports, listens to gossip, and claims a group when the rules in Decide say so.
//
// One goroutine (run) owns all of the agent's state. Work that waits on the network (EC2
// reads and claims, direct probes, datapath checks, the shutdown announcement) runs in
// goroutines that hand their result back to run through a channel. The files split the
// loop's jobs: membership (members.go), EC2 observation (observe.go), the decision's view
// (view.go), confirmation (confirm.go), claims (claim.go), health (health.go) and the
// shutdown handover (handover.go).
package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
	"github.com/natganker/natganker/sdnotify"
)

// Deps are the agent's connections to the outside world.
type Deps struct {
	// Cloud is EC2.
	Cloud Cloud
	// Health checks the datapath; nil means always healthy.
	Health HealthChecker
	// Notices reads the instance metadata service's notices of the instance's end
	// (handoff.go); nil watches none.
	Notices NoticeSource
	// Supervisor is the service manager told of readiness, status and liveness
	// (supervise.go); nil tells none.
	Supervisor Supervisor
	// Hooks takes the hooks of a reloaded configuration (reload.go); nil: changing the
	// hooks needs a restart.
	Hooks HooksReloader
	// Membership is the cluster's gossip; nil builds memberlist-based gossip from the config.
	Membership Membership
	// Flows is the kernel's table of masqueraded flows, replicated to the peers (flows.go);
	// nil replicates none.
	Flows FlowSource
	// Version is reported by status.
	Version string
	// Events receive what happens (events.go): metrics, hooks. Each must return at once.
	Events []EventSink
}

// evalInterval paces decisions that depend on time passing (failback, confirmations).
const evalInterval = 100 * time.Millisecond

// Agent is one natganker node.
type Agent struct {
	cfg    *config.Config
	id     ec2.Identity
	deps   Deps
	logger hclog.Logger
	gossip Membership
	self   ec2.Self
	// flows replicates masqueraded flows (flows.go); nil when connection sync is off.
	flows *flowSync

	requests  chan func()
	observed  chan observeResult
	confirmed chan confirmResult
	claimed   chan claimResult
	checked   chan datapath.Health
	announced chan error

	// Everything below is owned by the run goroutine.
	started    time.Time
	members    map[string]gossip.Member
	groups     []*groupState
	health     healthState
	confirms   map[string]*confirmState
	heartbeats map[string]*heartbeatState
	// wake makes the loop decide now: a watched peer has gone quiet.
	wake          chan struct{}
	leave         *handover
	publishedMeta *gossip.Meta // nil until the first publish
	notes         announced
	// snat are the source NAT rules last handed to the datapath (addresses.go).
	snat []datapath.SourceNAT

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	runDone   chan struct{}

	// Owned by the run goroutine too: what the service manager was told (supervise.go) and
	// what reloads changed (reload.go).
	sd       supervised
	reloaded reloaded
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
		self:       ec2.Self{InstanceID: id.InstanceID},
		requests:   make(chan func()),
		observed:   make(chan observeResult),
		confirmed:  make(chan confirmResult),
		claimed:    make(chan claimResult),
		checked:    make(chan datapath.Health),
		announced:  make(chan error),
		members:    make(map[string]gossip.Member),
		confirms:   make(map[string]*confirmState),
		heartbeats: make(map[string]*heartbeatState),
		wake:       make(chan struct{}, 1),
		health:     healthState{healthy: true},
		runDone:    make(chan struct{}),
	}
	for _, g := range cfg.Groups {
		if g.Target == config.TargetENI {
			a.self.TargetENI = true
		}
		a.groups = append(a.groups, newGroupState(g))
	}
	a.gossip = deps.Membership
	if a.gossip == nil {
		gc := cfg.Gossip
		advertise := gc.AdvertiseAddr
		if advertise == "" {
			advertise = id.LocalIPv4
		}
		g, err := gossip.New(gossip.Config{
			Name: id.InstanceID, BindAddr: gc.BindAddr, BindPort: gc.BindPort,
			AdvertiseAddr: advertise, AdvertisePort: gc.AdvertisePort,
			Peers: gc.Peers, EncryptKey: gc.EncryptKey, OtherKeys: gc.OtherKeys,
			ProbeInterval: gc.ProbeInterval, ProbeTimeout: gc.ProbeTimeout, SuspicionMult: gc.SuspicionMult,
			GossipInterval: gc.GossipInterval, RejoinInterval: gc.RejoinInterval,
			ConfirmProbes: gc.ConfirmProbes, ConfirmTimeout: gc.ConfirmTimeout,
			Meta: a.meta(),
		}, logger)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.gossip = g
	}
	return a, nil
}

// Start checks the datapath, joins the cluster and starts the agent's loops. The agent lives
// until Close, or until ctx ends (then without a handover).
func (a *Agent) Start(ctx context.Context) error {
	a.ctx, a.cancel = context.WithCancel(ctx)
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
	a.checkAtStart(ctx)
	err = a.startSinks(a.ctx)
	if err == nil {
		if err = a.gossip.SetMeta(a.meta()); err == nil {
			err = a.gossip.Start(a.ctx)
		}
		if err != nil {
			_ = a.closeSinks(a.deps.Events)
		}
	}
	if err != nil {
		// Nothing runs yet: leave the agent as if never started, so Close returns at once.
		a.cancel()
		a.cancel = nil
		return err
	}
	a.logger.Info("started", "node", a.id.InstanceID, "gossip", a.gossip.LocalAddr(), "groups", a.groupNames(), "peers", a.cfg.Gossip.Peers)
	a.startFlowSync()
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
	if h := a.cfg.Handoff; a.deps.Notices != nil && watchesNotices(h) {
		a.spawn(func() { a.watchNotices(a.ctx, a.deps.Notices, h) })
	}
	return nil
}

// Close hands every group this node owns to a peer (see handover.go), leaves the cluster
// gracefully, then stops. Safe to call more than once.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		if a.cancel == nil {
			return
		}
		a.notifyStopping()
		done := make(chan struct{})
		if a.do(context.Background(), func() { a.beginHandover(done) }) == nil {
			select {
			case <-done:
			case <-a.runDone:
			}
		}
		if lerr := a.gossip.Leave(2 * time.Second); lerr != nil {
			a.logger.Warn("graceful leave incomplete", "error", lerr)
		}
		a.cancel()
		a.wg.Wait()
		err = errors.Join(a.gossip.Close(), a.closeSinks(a.deps.Events))
		a.logger.Info("stopped")
	})
	return err
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

// spawn runs fn in a goroutine tracked by the agent's WaitGroup.
func (a *Agent) spawn(fn func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn()
	}()
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
	watchdog, stopWatchdog := a.watchdogTick()
	defer stopWatchdog()

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
		case err := <-a.announced:
			a.onAnnounced(err)
		case fn := <-a.requests:
			fn()
		case <-evalTick.C:
		case <-a.wake:
		case <-observeTick.C:
			for _, g := range a.groups {
				a.observe(g)
			}
		case <-checkTick.C:
			a.check()
		case <-watchdog:
			// Sent by this loop and no other goroutine: if the loop wedges, the pings stop
			// and the service manager restarts the agent.
			a.notify(sdnotify.Watchdog)
		}
		a.evaluate()
		a.report()
		if a.flows != nil {
			a.flows.setOwning(a.ownsAny())
			a.guard()
		}
	}
}

// ownsAny reports whether this node holds any group as far as EC2 last showed.
func (a *Agent) ownsAny() bool {
	for _, g := range a.groups {
		if g.owner == a.id.InstanceID {
			return true
		}
	}
	return false
}

// evaluate decides every group and acts on the verdicts.
func (a *Agent) evaluate() {
	now := time.Now()
	a.abandonClaims()
	watch := make(map[string]string)
	for _, g := range a.groups {
		a.clearDisplaced(g, now)
		a.noteLostUnseen(g, now)
		v := a.view(g, now)
		if a.leave == nil {
			for _, name := range watched(v) {
				watch[name] = a.members[name].Addr
			}
		}
		verdict := Decide(v)
		g.fresh = false
		a.noteVerdict(g, verdict, now)
		switch verdict.Action {
		case ActClaim:
			a.claim(g, verdict.Reason, now)
		case ActConfirm:
			a.confirm(g, now)
		case ActRefuse:
			a.finishWaiters(g, fmt.Errorf("not taking over: %s", verdict.Reason))
			g.force = false
		}
		if !verdict.RecheckAt.IsZero() && !now.Before(verdict.RecheckAt) && g.obs.ReadAt.Before(verdict.RecheckAt) {
			a.observe(g)
		}
		if g.obsErr != nil && now.Sub(g.failedAt) >= unreadableRetry {
			a.observe(g)
		}
		if !g.rereadAt.IsZero() && !now.Before(g.rereadAt) {
			g.rereadAt = time.Time{}
			a.observe(g)
		}
	}
	a.watchPeers(watch, now)
	// A watched peer that went quiet is probed at once, owner or not: the decision counts a
	// silent peer dead only after a burst.
	for name, addr := range watch {
		if a.quiet(name, now) {
			a.confirmPeer(name, addr, now)
		}
	}
	a.stepHandover(now)
	a.publish()
	a.noteChanges()
}

// noteVerdict logs a decision when it changes and remembers when the current one began.
func (a *Agent) noteVerdict(g *groupState, v Verdict, now time.Time) {
	key := v.Action.String() + "|" + v.Desired
	if key == g.lastKey {
		return
	}
	g.lastKey = key
	if v.Action == ActNone {
		g.trigger = time.Time{}
	} else if g.trigger.IsZero() {
		g.trigger = now
	}
	a.logger.Debug("decision", "group", g.cfg.Name, "action", v.Action.String(), "desired", orNone(v.Desired), "reason", v.Reason)
}

func (a *Agent) groupNames() []string {
	var out []string
	for _, g := range a.groups {
		out = append(out, g.cfg.Name)
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
