package lab

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2/ec2test"
)

// ChaosOptions configure a chaos run.
type ChaosOptions struct {
	AgentBin  string
	HelperCmd []string
	// Duration of the fault phase; set-up and the final settling come on top.
	Duration time.Duration
	// Seed drives every random draw (which fault, where, how long, how hard). The same seed
	// draws the same faults in the same order; the timing of the system under test is not
	// replayable.
	Seed uint64
	// FailbackDelay written into the agents' config (default 5 s, so that failbacks happen
	// within a fault's recovery).
	FailbackDelay time.Duration
	// ExtraTables besides the client's (default 2: three managed route tables).
	ExtraTables int
	// Kinds restricts the faults drawn (nil: all).
	Kinds []FaultKind
	// OutDir receives chaos-<time>.{md,json,svg} and the timeline; "" writes nothing.
	OutDir string
	// Dir is the lab's working directory ("" a temporary one).
	Dir      string
	Logger   hclog.Logger
	Progress io.Writer
	// Live, when set, receives the timeline as it happens.
	Live io.Writer
}

// chaosRun is one chaos run: the lab, the driver's record of what it did (ground truth),
// the referee, and the faults.
type chaosRun struct {
	l    *Lab
	o    ChaosOptions
	b    Bounds
	tl   *Timeline
	zero time.Time
	ids  map[string]string

	truth *truthBook
	ref   *referee
	res   resourceBook

	hostMu map[string]*sync.Mutex // agent lifecycle per host: one fault, or a crash restart, at a time
	wg     sync.WaitGroup         // restarts of crashed agents

	mu             sync.Mutex
	faults         []*Fault
	active         map[int]*Fault
	violations     []Violation // found by the driver itself (agents exiting on their own)
	problems       []string
	lastMembership time.Time // end of the last membership fault
	lastEC2        time.Time // end of the last EC2 fault
	lastHeal       time.Time // end of the last partition
	settleWarned   time.Time // the fault end a missing failback was reported for
	phaseOver      bool
}

// Chaos runs random faults against the pair for o.Duration on a fresh lab and judges the run
// with an independent referee; it writes the results under o.OutDir.
func Chaos(ctx context.Context, o ChaosOptions) (*ChaosResult, error) {
	if o.FailbackDelay == 0 {
		o.FailbackDelay = 5 * time.Second
	}
	if o.ExtraTables == 0 {
		o.ExtraTables = 2
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	// The tracks report from goroutines of their own.
	o.Progress = &lockedWriter{w: o.Progress}
	zero := time.Now()
	c := &chaosRun{o: o, b: BoundsFor(config.Default(), o.FailbackDelay), zero: zero,
		tl: NewTimeline(o.Live, zero), truth: newTruthBook(), active: map[int]*Fault{},
		hostMu: map[string]*sync.Mutex{Nat1: {}, Nat2: {}}}
	c.l = New(Options{Dir: o.Dir, AgentBin: o.AgentBin, HelperCmd: o.HelperCmd, ExtraTables: o.ExtraTables,
		FailbackDelay: o.FailbackDelay, Logger: o.Logger, Timeline: c.tl,
		// EC2's own token buckets always apply; the chaos faults come on top.
		Proxy: &ec2test.ProxyOptions{Throttle: true}})
	defer c.l.Close()
	res := &ChaosResult{Started: zero, Seed: o.Seed, Machine: machine(), Bounds: c.b, timeline: c.tl}
	res.Settings = map[string]string{
		"seed":           fmt.Sprint(o.Seed),
		"fault_phase":    o.Duration.String(),
		"failback_delay": o.FailbackDelay.String(),
		"route_tables":   fmt.Sprint(1 + o.ExtraTables),
		"agent_config":   "lab defaults (gossip profile fast, reconcile 10s, datapath check 1s) except failback_delay",
		"ec2":            "moto behind ec2test.Proxy with EC2's token buckets; chaos EC2 faults on top",
		"sampling":       "100ms",
		"agent":          o.AgentBin,
	}
	fmt.Fprintf(o.Progress, "chaos: seed %d, %s of faults, failback_delay %s\n", o.Seed, o.Duration, o.FailbackDelay)
	if err := c.setUp(ctx); err != nil {
		return res, err
	}
	tr, err := c.l.StartTraffic(ctx)
	if err != nil {
		return res, err
	}
	c.ref = newReferee(c)
	rctx, stopRef := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		c.ref.run(rctx)
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			c.res.sample(c.l)
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		stopRef()
		bg.Wait()
	}()
	start := time.Now()
	c.tl.SetZero(start)
	c.zero = start
	res.Started = start
	c.tl.Add(start, "chaos", "fault phase begins: seed %d, %s", o.Seed, o.Duration)

	phase, endPhase := context.WithTimeout(ctx, o.Duration)
	var tracks sync.WaitGroup
	for i, track := range []func(context.Context, *mrand.Rand){c.membershipTrack, c.lossTrack, c.ec2Track, c.imdsTrack} {
		rng := mrand.New(mrand.NewPCG(o.Seed, uint64(i+1)))
		tracks.Add(1)
		go func() {
			defer tracks.Done()
			track(phase, rng)
		}()
	}
	tracks.Wait()
	endPhase()
	c.mu.Lock()
	c.phaseOver = true
	c.mu.Unlock()
	c.tl.Add(time.Now(), "chaos", "fault phase over: every fault removed; waiting for the pair to settle")
	fmt.Fprintf(o.Progress, "%s  fault phase over; settling\n", c.rel(time.Now()))
	if ctx.Err() == nil {
		if why := c.waitSettled(ctx, 90*time.Second); why != "" {
			c.problem("the pair did not settle within 90s after the fault phase: %s", why)
		}
		time.Sleep(2 * time.Second)
	}
	end := time.Now()
	c.res.sample(c.l)
	stopRef()
	bg.Wait()

	c.wg.Wait()
	c.mu.Lock()
	extra := append([]Violation(nil), c.violations...)
	c.mu.Unlock()
	rec := Record{Start: start, End: end, Samples: c.ref.all(), Faults: c.faults, IDs: c.ids, Bounds: c.b,
		Gaps: tr.Gaps(start, end, 30*time.Millisecond), Extra: extra}
	j := Judge(rec)
	res.fill(c, rec, j)
	res.EC2Calls = c.l.ProxyStats()
	if o.OutDir != "" {
		if err := res.Write(o.OutDir); err != nil {
			return res, err
		}
	}
	return res, ctx.Err()
}

// setUp builds the lab and starts both agents, recording what it started.
func (c *chaosRun) setUp(ctx context.Context) error {
	if err := c.l.Up(ctx); err != nil {
		return err
	}
	w := c.l.World()
	c.ids = map[string]string{Nat1: w.Instances[Nat1].ID, Nat2: w.Instances[Nat2].ID}
	for _, h := range []string{Nat1, Nat2} {
		c.truth.update(h, func(r *hostRecord) {
			r.linksUp, r.publicUp, r.imds, r.priority = true, true, true, DefaultPriority(h)
		})
		if err := c.startAgent(ctx, h, AgentVariant{}); err != nil {
			return err
		}
	}
	if err := c.l.WaitReady(ctx, Natganker, time.Minute); err != nil {
		return err
	}
	if _, err := c.l.WaitOwner(ctx, Nat1, 30*time.Second); err != nil {
		return err
	}
	// Let both agents read EC2 and pass their start-up grace before the first fault.
	if !sleepCtx(ctx, c.b.StartupGrace) {
		return ctx.Err()
	}
	return nil
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *chaosRun) rel(t time.Time) string { return fmt.Sprintf("%+8.1fs", t.Sub(c.zero).Seconds()) }

func (c *chaosRun) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.problems = append(c.problems, fmt.Sprintf("%s %s", c.rel(time.Now()), msg))
	c.mu.Unlock()
	c.tl.Add(time.Now(), "chaos", "PROBLEM: %s", msg)
	fmt.Fprintf(c.o.Progress, "%s  PROBLEM: %s\n", c.rel(time.Now()), msg)
}

// startAgent starts host's agent with variant v and records it.
func (c *chaosRun) startAgent(ctx context.Context, host string, v AgentVariant) error {
	c.l.SetAgentVariant(host, v)
	if err := c.l.StartNode(ctx, host, Natganker); err != nil {
		return fmt.Errorf("start agent on %s: %w", host, err)
	}
	p := c.l.nodeProc(host)
	prio := DefaultPriority(host)
	if v.Priority != 0 {
		prio = v.Priority
	}
	c.truth.update(host, func(r *hostRecord) {
		r.agent, r.agentStart, r.stopping, r.otherKey, r.priority = p, p.started, false, v.GossipKey != "", prio
	})
	return nil
}

// killAgent SIGKILLs host's agent, leaving its links and datapath up.
func (c *chaosRun) killAgent(host string) {
	c.truth.update(host, func(r *hostRecord) { r.agent = nil })
	c.l.KillNode(host)
}

// stopAgent sends SIGTERM to host's agent and waits until it has handed over and exited.
func (c *chaosRun) stopAgent(host string) {
	c.truth.update(host, func(r *hostRecord) { r.stopping = true })
	// Handover waits up to 10 s for a peer, then the agent leaves the cluster (2 s).
	c.l.StopNodeGrace(host, 20*time.Second)
	c.truth.update(host, func(r *hostRecord) { r.agent, r.stopping = nil, false })
}

// restartCrashed starts again an agent that exited on its own, so that the run goes on.
func (c *chaosRun) restartCrashed(host string, p *proc) {
	mu := c.hostMu[host]
	mu.Lock()
	defer mu.Unlock()
	if c.truth.agentOf(host) != p {
		return
	}
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.tl.Add(time.Now(), "chaos", "restarting the agent on %s after it exited on its own", host)
	if err := c.startAgent(ctx, host, AgentVariant{}); err != nil {
		c.problem("restart %s after it exited: %v", host, err)
	}
}

// truthBook is the chaos driver's record of what it did to each NAT.
type truthBook struct {
	mu     sync.Mutex
	hosts  map[string]*hostRecord
	dropIn map[string]bool
	loss   int
	ec2    string
}

type hostRecord struct {
	linksUp, publicUp, stopping, otherKey, imds bool
	priority                                    int
	agent                                       *proc
	agentStart                                  time.Time
	exitNoted                                   *proc
}

func newTruthBook() *truthBook {
	return &truthBook{hosts: map[string]*hostRecord{Nat1: {}, Nat2: {}}, dropIn: map[string]bool{}}
}

func (t *truthBook) update(host string, fn func(*hostRecord)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fn(t.hosts[host])
}

func (t *truthBook) setDrop(host string, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropIn[host] = on
}

func (t *truthBook) setLoss(p int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.loss = p
}

func (t *truthBook) setEC2(k string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ec2 = k
}

// agentStarted reports whether host's agent runs, as the driver last set it, and when it was
// started.
func (t *truthBook) agentStarted(host string) (running bool, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.hosts[host]
	return r.agent != nil && !r.agent.Exited(), r.agentStart
}

func (t *truthBook) agentOf(host string) *proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hosts[host].agent
}

// snapshot returns each NAT's truth (Masq left for the referee to read) and the agents that
// exited without the driver stopping them, each reported once.
func (t *truthBook) snapshot() (map[string]HostTruth, map[string]bool, map[string]*proc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	hosts := map[string]HostTruth{}
	exited := map[string]*proc{}
	for h, r := range t.hosts {
		running := r.agent != nil && !r.agent.Exited()
		if r.agent != nil && !running && !r.stopping && r.exitNoted != r.agent {
			r.exitNoted = r.agent
			exited[h] = r.agent
		}
		hosts[h] = HostTruth{LinksUp: r.linksUp, PublicUp: r.publicUp, Agent: running, Stopping: r.stopping && running,
			OtherKey: r.otherKey, Priority: r.priority, IMDS: r.imds, AgentStart: r.agentStart}
	}
	drop := map[string]bool{}
	for h, on := range t.dropIn {
		drop[h] = on
	}
	return hosts, drop, exited
}

// faultIDs lists fault ids as text.
func faultIDs(ids []int) string {
	var out []string
	for _, id := range ids {
		out = append(out, fmt.Sprintf("#%d", id))
	}
	return strings.Join(out, " ")
}
