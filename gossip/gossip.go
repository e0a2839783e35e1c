// Package gossip wraps hashicorp/memberlist for the agent: it carries each node's Meta, turns
// membership changes into a queue of Events that never blocks memberlist, re-joins configured
// peers that dropped out of the member list, and confirms a death with direct probes.
package gossip

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Config is what a Gossip needs to run.
type Config struct {
	// Name is this node's unique name: the EC2 instance id.
	Name string
	// BindAddr and BindPort are where memberlist listens (UDP and TCP).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what peers are told to use; empty/0 means bind's.
	AdvertiseAddr string
	AdvertisePort int
	// Peers are host:port addresses of the other nodes, joined at start and re-joined
	// whenever they are missing from the member list.
	Peers []string
	// EncryptKey (16, 24 or 32 bytes) turns on AES-GCM for all gossip; nil means plaintext.
	EncryptKey []byte
	// OtherKeys are accepted from peers too, but not sent with (a key rotation in progress).
	OtherKeys [][]byte
	// Timers; see config.Gossip.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	RejoinInterval time.Duration
	// PushPullInterval is how often memberlist syncs full state with a peer over TCP; 0
	// means 10 s.
	PushPullInterval time.Duration
	// ConfirmProbes direct pings are sent within ConfirmTimeout by Confirm.
	ConfirmProbes  int
	ConfirmTimeout time.Duration
	// Meta is published from the start.
	Meta Meta
	// Started is stamped into this node's metadata as the start of its run (see Meta.Started);
	// zero means when New is called.
	Started time.Time
}

// State is a member's state as far as this node knows.
type State string

// Member states.
const (
	StateAlive State = "alive"
	StateDead  State = "dead"
	StateLeft  State = "left"
)

// Member is a copy of what this node knows about a peer (or itself).
type Member struct {
	Name string
	// Addr is host:port of the peer's gossip endpoint.
	Addr  string
	State State
	Meta  Meta
	// MetaErr is set when the peer's metadata could not be read; such a peer owns nothing.
	MetaErr string
	// Since is when this node saw the member enter its current State.
	Since time.Time
	// Gone is when it last dropped out of this node's view (dead or left); zero if never.
	Gone time.Time
	// Path, for an alive peer, says which protocol to its gossip port is blocked while the
	// other gets through, and what to open; empty when both work (see PathProblems).
	Path string
}

// EventKind says what happened to a member.
type EventKind int

// Kinds of Event.
const (
	EventJoin EventKind = iota
	EventLeave
	EventUpdate
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	default:
		return "update"
	}
}

// Event is one membership change. At is when memberlist reported it.
type Event struct {
	Kind   EventKind
	Member Member
	At     time.Time
}

// Gossip is a running member of the cluster.
type Gossip struct {
	cfg    Config
	logger hclog.Logger

	ml        *memberlist.Memberlist
	events    chan Event
	localAddr string

	mu      sync.Mutex
	queue   []Event
	members map[string]Member
	// contact is when each node last showed it was alive: an ack to one of our probes, or
	// an alive message about it.
	contact map[string]time.Time
	meta    []byte
	wake    chan struct{}
	// started is when this run began, stamped into every metadata this node sends; older
	// holds back peers' metadata from an earlier start than the known one (see starts.go).
	started time.Time
	older   map[string]olderStart

	metaDirty chan struct{}
	// updateMu serialises memberlist's UpdateNode: it reads this node's state outside
	// memberlist's lock while another call writes it.
	updateMu sync.Mutex
	keyring  *memberlist.Keyring // nil without encryption
	handler  atomic.Pointer[handlerBox]
	keys     *keyWatch
	path     *pathWatch

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New checks cfg and prepares a Gossip; it starts nothing.
func New(cfg Config, logger hclog.Logger) (*Gossip, error) {
	if cfg.Name == "" {
		return nil, errors.New("gossip: node name is empty")
	}
	for _, k := range append([][]byte{cfg.EncryptKey}, cfg.OtherKeys...) {
		if n := len(k); n != 0 && n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("gossip: encryption key is %d bytes; it must be 16, 24 or 32 (AES-128, -192 or -256)", n)
		}
	}
	if len(cfg.EncryptKey) == 0 && len(cfg.OtherKeys) > 0 {
		return nil, errors.New("gossip: other keys given without a key to send with")
	}
	if cfg.ConfirmProbes <= 0 {
		cfg.ConfirmProbes = 1
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = cfg.ProbeTimeout
	}
	started := cfg.Started
	if started.IsZero() {
		started = time.Now()
	}
	cfg.Meta.Started = started
	meta, err := EncodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:       cfg,
		logger:    logger.Named("gossip"),
		events:    make(chan Event),
		members:   make(map[string]Member),
		contact:   make(map[string]time.Time),
		meta:      meta,
		started:   started,
		older:     make(map[string]olderStart),
		wake:      make(chan struct{}, 1),
		metaDirty: make(chan struct{}, 1),
		keys:      newKeyWatch(logger.Named("gossip")),
	}
	g.path = newPathWatch(g.logger, g.pathChanged, g.heardOverTCP)
	return g, nil
}

// Start creates the memberlist, joins whatever configured peers answer (none answering is
// not an error: they are re-joined in the background) and starts the background loops.
func (g *Gossip) Start(ctx context.Context) error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = g.cfg.Name
	mc.BindAddr = g.cfg.BindAddr
	mc.BindPort = g.cfg.BindPort
	mc.AdvertiseAddr = g.cfg.AdvertiseAddr
	mc.AdvertisePort = g.cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = g.cfg.BindPort
	}
	if g.cfg.ProbeInterval > 0 {
		mc.ProbeInterval = g.cfg.ProbeInterval
	}
	if g.cfg.ProbeTimeout > 0 {
		mc.ProbeTimeout = g.cfg.ProbeTimeout
	}
	if g.cfg.SuspicionMult > 0 {
		mc.SuspicionMult = g.cfg.SuspicionMult
	}
	if g.cfg.GossipInterval > 0 {
		mc.GossipInterval = g.cfg.GossipInterval
	}
	// A handful of NATs: push/pull often keeps views converged cheaply, and a dead peer's
	// TCP join attempt must not hold the rejoin loop for long.
	mc.PushPullInterval = 10 * time.Second
	if g.cfg.PushPullInterval > 0 {
		mc.PushPullInterval = g.cfg.PushPullInterval
	}
	mc.TCPTimeout = 2 * time.Second
	// memberlist LZW-compresses every message it sends, allocating a 64 KiB table each time,
	// and keeps the result only when it is smaller, which a probe or an ack never is: an idle
	// agent spent most of its allocations, and so its GC cycles, on it (BenchmarkFootprint).
	// A peer decodes compressed messages whatever its own setting, so builds mix.
	mc.EnableCompression = false
	if len(g.cfg.EncryptKey) > 0 {
		kr, err := newKeyring(g.cfg.EncryptKey, g.cfg.OtherKeys)
		if err != nil {
			return err
		}
		g.keyring = kr
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.Delegate = (*delegate)(g)
	mc.Events = (*eventDelegate)(g)
	mc.Conflict = (*conflictDelegate)(g)
	mc.Ping = (*pingDelegate)(g)
	mc.LogOutput = nil
	mc.Logger = log.New(&memberlistLog{keys: g.keys, path: g.path, addrOf: g.addrOf,
		next: g.logger.Named("memberlist").StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})}, "", 0)

	listen := net.JoinHostPort(g.cfg.BindAddr, strconv.Itoa(g.cfg.BindPort))
	tr, err := newTransport(g.cfg.BindAddr, g.cfg.BindPort, mc.Logger)
	if err != nil {
		return fmt.Errorf("gossip: listen on %s: %w", listen, err)
	}
	mc.Transport = tr
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return fmt.Errorf("gossip: start on %s: %w", listen, err)
	}
	g.ml = ml
	// Read once, before memberlist's own goroutines get going: LocalNode points at state
	// that memberlist updates without a lock the caller could take.
	g.localAddr = ml.LocalNode().Address()

	ctx, g.cancel = context.WithCancel(ctx)
	g.wg.Add(3)
	go g.pump(ctx)
	go g.rejoinLoop(ctx)
	go g.metaLoop(ctx)
	return nil
}

// Events delivers membership changes in order. The queue behind it is unbounded so that
// memberlist's callbacks never wait on the agent.
func (g *Gossip) Events() <-chan Event { return g.events }

// LocalName is this node's name.
func (g *Gossip) LocalName() string { return g.cfg.Name }

// LocalAddr is the host:port this node advertises.
func (g *Gossip) LocalAddr() string {
	return g.localAddr
}

// Members returns a copy of every node this one knows, itself included, sorted by name.
// Dead and departed nodes stay listed until the agent restarts.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.believeOlderStarts(time.Now())
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, g.withPath(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LastContact is when name last showed it was alive (zero if never): an answer to one of
// memberlist's probes or an alive message about it. With probes every ProbeInterval, a gap
// of several intervals means the peer is probably gone, before memberlist's suspicion
// timeout declares it.
func (g *Gossip) LastContact(name string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.contact[name]
}

// Unreadable lists the addresses that sent gossip this node could not decrypt within the last
// minute: nodes with another gossip key (or none), which cannot be members.
func (g *Gossip) Unreadable() []Unreadable { return g.keys.list() }

// PathProblems lists the peers whose gossip port answers over one protocol and not the
// other (a security group or network ACL open for TCP only, or UDP only), members or not,
// with the name of the member at that address when there is one. A member that is alive
// carries its note in Member.Path too; a peer that cannot join appears only here.
func (g *Gossip) PathProblems() []PathProblem {
	out := g.path.list()
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range out {
		for _, m := range g.members {
			if hostOf(m.Addr) != hostOf(out[i].Addr) {
				continue
			}
			if out[i].Name == "" {
				out[i].Name = m.Name
			}
			if m.State == StateAlive {
				memberPath(&out[i])
			}
		}
	}
	return out
}

// memberPath makes pr about a member: a peer that could not be joined earlier may have
// become one since over UDP alone (memberlist piggybacks a node's alive message on pings).
func memberPath(pr *PathProblem) {
	if pr.Joining {
		pr.Joining = false
		pr.Note = pathNote(pr)
	}
}

// withPath returns m with its path note, which only an alive member carries. Call with g.mu
// held.
func (g *Gossip) withPath(m Member) Member {
	m.Path = ""
	if m.State == StateAlive {
		if pr := g.path.problem(m.Addr); pr != nil {
			memberPath(pr)
			m.Path = pr.Note
		}
	}
	return m
}

// pathChanged tells the agent, through an update event, that the path note of the member at
// addr changed.
func (g *Gossip) pathChanged(addr string) {
	now := time.Now()
	var changed []Member
	g.mu.Lock()
	for _, m := range g.members {
		if m.State == StateAlive && hostOf(m.Addr) == hostOf(addr) {
			changed = append(changed, g.withPath(m))
		}
	}
	g.mu.Unlock()
	for _, m := range changed {
		g.push(Event{Kind: EventUpdate, Member: m, At: now})
	}
}

// heardOverTCP notes that name answered one of memberlist's probes, over TCP.
func (g *Gossip) heardOverTCP(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.members[name]; ok {
		g.contact[name] = time.Now()
	}
}

// addrOf returns the gossip address of the member called name, or "".
func (g *Gossip) addrOf(name string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.members[name].Addr
}

// Leave tells the peers this node is going away, so they mark it left at once instead of
// waiting for the failure detector.
func (g *Gossip) Leave(timeout time.Duration) error {
	if g.ml == nil {
		return nil
	}
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Close stops memberlist and the background loops. It does not leave gracefully: call Leave
// first for that. Safe to call more than once.
func (g *Gossip) Close() error {
	g.closeOnce.Do(func() {
		if g.cancel != nil {
			g.cancel()
		}
		if g.ml != nil {
			g.closeErr = g.ml.Shutdown()
		}
		g.wg.Wait()
	})
	return g.closeErr
}

// push queues an event without ever blocking the memberlist goroutine that called it.
func (g *Gossip) push(e Event) {
	g.mu.Lock()
	g.queue = append(g.queue, e)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// pump moves queued events to the Events channel, at the agent's pace.
func (g *Gossip) pump(ctx context.Context) {
	defer g.wg.Done()
	for {
		g.mu.Lock()
		var next *Event
		if len(g.queue) > 0 {
			e := g.queue[0]
			g.queue = g.queue[1:]
			next = &e
		}
		g.mu.Unlock()
		if next == nil {
			select {
			case <-g.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		select {
		case g.events <- *next:
		case <-ctx.Done():
			return
		}
	}
}

// rejoinLoop joins configured peers that are not alive members. memberlist never probes a
// node again once it declared it dead, so without this two nodes split by a partition would
// stay apart after it heals.
func (g *Gossip) rejoinLoop(ctx context.Context) {
	defer g.wg.Done()
	interval := g.cfg.RejoinInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	g.rejoin()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.rejoin()
		}
	}
}

func (g *Gossip) rejoin() {
	missing := g.missingPeers()
	if len(missing) == 0 {
		return
	}
	n, err := g.ml.Join(missing)
	if err != nil {
		// memberlist joins one error line per peer that failed.
		for _, line := range strings.Split(err.Error(), "\n") {
			for _, p := range missing {
				if strings.Contains(line, p) && isKeyError(line) {
					g.keys.note(p, strings.TrimSpace(line))
				}
			}
			if strings.Contains(line, "failed to join ") {
				if addr := dialAddr(line); addr != "" {
					g.joinFailed(addr)
				}
			}
		}
	}
	if err != nil {
		g.logger.Debug("peers not reachable yet", "peers", missing, "joined", n, "error", err)
		return
	}
	g.logger.Info("joined peers", "peers", missing, "joined", n)
}

// joinFailed notes a join that could not open a TCP connection to addr, and pings addr over
// UDP to tell a peer behind a path open for UDP only from one that is down: only the former
// answers. The ping names no node, so that any node with this node's key answers it.
func (g *Gossip) joinFailed(addr string) {
	g.path.tcpFailed(addr, "", true)
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return
	}
	if _, err := g.ml.Ping("", ua); err == nil {
		g.path.udpAck(addr, "")
	}
}

// missingPeers lists configured peers whose address belongs to no alive member.
func (g *Gossip) missingPeers() []string {
	// memberlist's own Members() hands out nodes it keeps writing to; the table built from
	// events is ours to read.
	alive := make(map[string]bool)
	g.mu.Lock()
	for _, m := range g.members {
		if m.State == StateAlive {
			alive[m.Addr] = true
		}
	}
	g.mu.Unlock()
	var missing []string
	for _, p := range g.cfg.Peers {
		if alive[p] {
			continue
		}
		// A peer given by name resolves to the address memberlist knows it by.
		if host, port, err := net.SplitHostPort(p); err == nil {
			if ips, err := net.LookupHost(host); err == nil && len(ips) > 0 && alive[net.JoinHostPort(ips[0], port)] {
				continue
			}
		}
		missing = append(missing, p)
	}
	return missing
}
