package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

// fakeCloud is a stateful in-memory EC2 for loop tests: one Elastic IP, route tables holding a
// default route, instances with a state and a private IP. Claims behave as ec2.Client's do:
// with a known read everything it lists is moved, then the claim reads back and fixes the rest.
type fakeCloud struct {
	mu        sync.Mutex
	eip       string            // instance holding the Elastic IP
	routes    map[string]string // route table → instance its default route points at ("" missing)
	states    map[string]string // instance → EC2 state (default running)
	claims    []fakeClaim
	mutations int
	reads     int
	// claimErr, when set, fails the next claims (and is then cleared).
	claimErr error
	// hold, when set, blocks claims until closed.
	hold chan struct{}
	// down, when set, fails every call with it, as an EC2 that cannot be reached.
	down error
	// staleReads is how many reads after each claim still show the state from before it,
	// as EC2's eventual consistency may; before is that state.
	staleReads int
	stale      int
	before     ec2.Observation
}

type fakeClaim struct {
	self  string
	known bool
	// moved lists the tables the claim pointed at self.
	moved []string
}

func newFakeCloud(owner string, tables ...string) *fakeCloud {
	f := &fakeCloud{eip: owner, routes: map[string]string{}, states: map[string]string{}}
	for _, t := range tables {
		f.routes[t] = owner
	}
	return f
}

func (f *fakeCloud) set(fn func(f *fakeCloud)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// owners returns who holds the EIP and every route, tables sorted.
func (f *fakeCloud) owners() (string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, t := range f.tables() {
		out = append(out, f.routes[t])
	}
	return f.eip, out
}

// allOn reports whether the EIP and every route point at id.
func (f *fakeCloud) allOn(id string) bool {
	eip, routes := f.owners()
	for _, r := range routes {
		if r != id {
			return false
		}
	}
	return eip == id
}

func (f *fakeCloud) claimLog() []fakeClaim {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.claims)
}

func (f *fakeCloud) tables() []string {
	var ts []string
	for t := range f.routes {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

func (f *fakeCloud) observation(self string) ec2.Observation {
	obs := ec2.Observation{EIP: ec2.EIP{AllocationID: "eipalloc-1", InstanceID: f.eip}, Instances: map[string]ec2.Instance{}, ReadAt: time.Now()}
	add := func(id string) {
		if id == "" {
			return
		}
		st := f.states[id]
		if st == "" {
			st = "running"
		}
		obs.Instances[id] = ec2.Instance{ID: id, State: st, PrivateIP: "127.0.0.1", ENIID: "eni-" + id}
	}
	add(self)
	add(f.eip)
	for _, t := range f.tables() {
		r := ec2.Route{RouteTableID: t, Destination: "0.0.0.0/0", InstanceID: f.routes[t], State: ec2.RouteActive}
		if r.InstanceID == "" {
			r.State = ec2.RouteMissing
		} else {
			r.ENIID = "eni-" + r.InstanceID
		}
		add(r.InstanceID)
		obs.Routes = append(obs.Routes, r)
	}
	return obs
}

func (f *fakeCloud) Observe(ctx context.Context, g ec2.Group, self ec2.Self) (ec2.Observation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.down != nil {
		return ec2.Observation{}, f.down
	}
	if f.stale > 0 {
		f.stale--
		obs := f.before
		obs.ReadAt = time.Now()
		return obs, nil
	}
	return f.observation(self.InstanceID), nil
}

func (f *fakeCloud) Claim(ctx context.Context, g ec2.Group, self ec2.Self, known *ec2.Observation) (ec2.Report, error) {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ec2.Report{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now()
	me := self.InstanceID
	c := fakeClaim{self: me, known: known != nil}
	if err := f.down; err != nil {
		f.claims = append(f.claims, c)
		return ec2.Report{Started: start, ReadErr: err}, err
	}
	if err := f.claimErr; err != nil {
		f.claimErr = nil
		f.claims = append(f.claims, c)
		return ec2.Report{Started: start, EIP: ec2.Step{Action: ec2.ActionFailed, Err: err}}, err
	}
	f.before, f.stale = f.observation(me), f.staleReads
	rep := ec2.Report{Started: start, EIP: ec2.Step{Action: ec2.ActionUnchanged}}
	move := func(t string) {
		if !slices.Contains(c.moved, t) {
			c.moved = append(c.moved, t)
		}
		f.routes[t] = me
		f.mutations++
	}
	if known != nil {
		// Everything the read lists moves, whatever it said the target was.
		rep.EIP.Action = ec2.ActionAssociated
		f.eip = me
		f.mutations++
		for _, r := range known.Routes {
			move(r.RouteTableID)
		}
	}
	// Read back (or read first) and fix the rest.
	if f.eip != me {
		rep.EIP.Action = ec2.ActionAssociated
		f.eip = me
		f.mutations++
	}
	for _, t := range f.tables() {
		if f.routes[t] != me {
			move(t)
		}
	}
	for _, t := range f.tables() {
		rep.Routes = append(rep.Routes, ec2.RouteStep{RouteTableID: t, Destination: "0.0.0.0/0", Action: ec2.ActionReplaced})
	}
	rep.EIPDone, rep.RoutesDone, rep.Verified = time.Since(start), time.Since(start), time.Since(start)
	f.claims = append(f.claims, c)
	return rep, nil
}

func (f *fakeCloud) DisableSourceDestCheck(ctx context.Context, id string) error { return nil }

// fakeGossip is an in-memory Membership: the test delivers events, sets when each peer was
// last heard, and scripts what a confirmation burst finds.
type fakeGossip struct {
	events chan gossip.Event

	mu        sync.Mutex
	members   map[string]gossip.Member
	contact   map[string]time.Time
	probes    map[string]gossip.Probe
	sequence  map[string][]gossip.Probe // answered first, in order, before probes
	confirms  map[string]int
	meta      gossip.Meta
	published []gossip.Meta // PublishMeta calls
	// heartbeats counts Heartbeat calls per peer; a peer in silent does not answer them.
	heartbeats map[string]int
	silent     map[string]bool
	unreadable []gossip.Unreadable
}

func newFakeGossip() *fakeGossip {
	return &fakeGossip{events: make(chan gossip.Event, 64), members: map[string]gossip.Member{}, contact: map[string]time.Time{},
		probes: map[string]gossip.Probe{}, sequence: map[string][]gossip.Probe{}, confirms: map[string]int{},
		heartbeats: map[string]int{}, silent: map[string]bool{}}
}

func (g *fakeGossip) Start(ctx context.Context) error { return nil }
func (g *fakeGossip) Events() <-chan gossip.Event     { return g.events }
func (g *fakeGossip) LocalAddr() string               { return "127.0.0.1:7946" }
func (g *fakeGossip) Leave(time.Duration) error       { return nil }
func (g *fakeGossip) Close() error                    { return nil }

func (g *fakeGossip) Members() []gossip.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []gossip.Member
	for _, m := range g.members {
		out = append(out, m)
	}
	return out
}

func (g *fakeGossip) LastContact(name string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.contact[name]
}

func (g *fakeGossip) SetMeta(m gossip.Meta) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.meta = m
	return nil
}

func (g *fakeGossip) PublishMeta(m gossip.Meta, timeout time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.meta = m
	g.published = append(g.published, m)
	return nil
}

func (g *fakeGossip) Confirm(ctx context.Context, name, addr string) (gossip.Probe, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.confirms[name]++
	p := g.probes[name]
	if seq := g.sequence[name]; len(seq) > 0 {
		p, g.sequence[name] = seq[0], seq[1:]
	}
	if p.Took == 0 {
		p.Took = 40 * time.Millisecond
	}
	return p, nil
}

func (g *fakeGossip) Heartbeat(name, addr string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.heartbeats[name]++
	if g.silent[name] {
		return errors.New("no ack")
	}
	g.contact[name] = time.Now()
	return nil
}

func (g *fakeGossip) PathProblems() []gossip.PathProblem { return nil }

func (g *fakeGossip) Unreadable() []gossip.Unreadable {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.unreadable)
}

func (g *fakeGossip) set(fn func(g *fakeGossip)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fn(g)
}

func (g *fakeGossip) confirmCount(name string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.confirms[name]
}

// peer sends an event about a peer with the given priority in group "egress".
func (g *fakeGossip) peer(name string, state gossip.State, prio int, healthy bool) {
	g.peerMeta(name, state, gossip.Meta{Healthy: healthy, Groups: map[string]gossip.GroupMeta{"egress": {Priority: prio}}})
}

// peerMeta sends an event about a peer with the given metadata.
func (g *fakeGossip) peerMeta(name string, state gossip.State, meta gossip.Meta) {
	m := gossip.Member{Name: name, Addr: "127.0.0.2:7946", State: state, Since: time.Now(), Meta: meta}
	kind := gossip.EventJoin
	if state != gossip.StateAlive {
		kind = gossip.EventLeave
	}
	g.mu.Lock()
	// As gossip does: Gone is when the peer last dropped out of view, kept once it is back.
	if state != gossip.StateAlive {
		m.Gone = m.Since
	} else {
		m.Gone = g.members[name].Gone
	}
	g.members[name] = m
	if state == gossip.StateAlive {
		// As gossip does: an alive member's news is contact.
		g.contact[name] = m.Since
	}
	g.mu.Unlock()
	g.events <- gossip.Event{Kind: kind, Member: m, At: m.Since}
}

// fakeHealth is a datapath whose health the test sets.
type fakeHealth struct {
	mu     sync.Mutex
	health datapath.Health
}

func (h *fakeHealth) Check(ctx context.Context) datapath.Health {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.health
}

// loopAgent is an agent on fakes, with timings short enough for a test to run in well under
// a second and a log the test can search.
type loopAgent struct {
	*Agent
	cloud  *fakeCloud
	gossip *fakeGossip
	log    *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func loopConfig(prio int, failbackDelay time.Duration) *config.Config {
	cfg := config.Default()
	cfg.Gossip.ProbeInterval = 200 * time.Millisecond
	cfg.Gossip.RejoinInterval = 50 * time.Millisecond
	cfg.EC2.ReconcileInterval = time.Hour
	cfg.EC2.CallTimeout = time.Second
	cfg.Control.StateFile = ""
	cfg.Datapath.CheckInterval = 50 * time.Millisecond
	g := config.DefaultGroup("egress")
	g.Priority, g.ElasticIP, g.FailbackDelay = prio, "eipalloc-1", failbackDelay
	cfg.Groups = []config.Group{g}
	return cfg
}

func startLoop(t *testing.T, self string, cfg *config.Config, cloud *fakeCloud, health HealthChecker) *loopAgent {
	t.Helper()
	return startLoopWith(t, self, cfg, cloud, func(d *Deps) { d.Health = health })
}

// kill stops the agent without a handover, as SIGKILL would.
func (l *loopAgent) kill() {
	l.closeOnce.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
}

// waitFor polls cond until it holds or 10 s pass (a bound for a busy machine, not a timing
// claim: the conditions are normally met within milliseconds).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// status returns the agent's view of group "egress".
func (l *loopAgent) status(t *testing.T) GroupView {
	t.Helper()
	st, err := l.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Groups[0]
}

// verdict is the decision the loop would take now for group "egress".
func (l *loopAgent) verdict() Verdict {
	var v Verdict
	l.do(context.Background(), func() { v = Decide(l.view(l.groups[0], time.Now())) })
	return v
}

// claimsStarted runs two decision rounds (each request to the loop is followed by one) on the
// latest read and returns how many groups have a claim in flight or done since start.
func (l *loopAgent) claimsStarted(t *testing.T) int {
	t.Helper()
	n := 0
	for i := 0; i < 3; i++ {
		if err := l.do(context.Background(), func() {
			n = 0
			for _, g := range l.groups {
				if g.claiming || g.last != nil {
					n++
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (l *loopAgent) logged(s string) bool { return strings.Contains(l.log.String(), s) }

var errInjected = errors.New("injected failure")

func describe(cs []fakeClaim) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s(known=%v moved=%v)", c.self, c.known, c.moved))
	}
	return strings.Join(parts, ", ")
}
