// Package lab builds natganker's failover lab: two NAT instances, a private client and an
// "internet" host as network namespaces, moto as EC2, one metadata mock per NAT, and a
// stand-in for the VPC data plane that makes the network follow what moto says. The demo,
// the benchmark and the end-to-end test run on it.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/ec2/ec2test"
)

// Mechanism names what moves the EIP and routes in a lab run.
type Mechanism string

// Mechanisms the lab can run.
const (
	Natganker  Mechanism = "natganker"
	Keepalived Mechanism = "keepalived"
)

// Options configure a lab. The zero value of every field has a usable default except
// AgentBin, which is needed to run natganker.
type Options struct {
	// Dir holds configs and logs; a temporary directory when empty (removed by Close).
	Dir string
	// AgentBin is the natganker-agent binary.
	AgentBin string
	// HelperCmd runs this program as an in-namespace helper (see HelperEnv); defaults to
	// the running executable.
	HelperCmd []string
	// MotoPort is the port moto listens on at EndpointIP (default 5000).
	MotoPort int
	// ExtraTables is how many route tables besides the client's point at the owner.
	ExtraTables int
	// AgentEndpoint is the EC2 endpoint the NATs use (default: moto itself); the bench
	// points it at the latency/throttling proxy.
	AgentEndpoint string
	// Proxy, when set, puts ec2test's latency/throttling proxy in front of moto at
	// EndpointIP:MotoPort+1 and makes it the NATs' EC2 endpoint.
	Proxy *ec2test.ProxyOptions
	// FailbackDelay is written into the agent config when non-zero.
	FailbackDelay time.Duration
	// Metrics makes each agent serve Prometheus metrics at MetricsURL (metrics.go).
	Metrics bool
	// NoConntrackSync turns the agents' connection sync off (conntrack_sync { enabled =
	// false }): the control against which it is measured.
	NoConntrackSync bool
	// Zones builds the zones lab instead (zones.go): three NATs, two groups, two clients,
	// EC2 through the proxy with AssociateAsEC2 (Proxy is set to that when nil).
	Zones bool
	// Logger receives the lab's own logs.
	Logger hclog.Logger
	// Timeline receives the events worth showing; may be nil.
	Timeline *Timeline
}

// Lab is one running lab. New starts nothing; Up builds it; Close removes everything.
type Lab struct {
	opts   Options
	logger hclog.Logger
	tl     *Timeline
	tmpDir bool

	ec2   *ec2.Client
	world World
	key   string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	fol    *follower
	zfol   *zonesFollower

	mu       sync.Mutex
	procs    []*proc
	nodes    map[string]*node // per NAT: agent or keepalived
	closed   bool
	traffic  *Traffic
	rec      logRecorder
	files    []io.Closer
	lock     *os.File
	proxy    *ec2test.Proxy
	proxySrv *http.Server
	imds     map[string]*proc // per NAT: its metadata mock
}

// New returns a lab that will use opts; it starts nothing.
func New(opts Options) *Lab {
	if opts.MotoPort == 0 {
		opts.MotoPort = 5000
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Lab{opts: opts, logger: opts.Logger.Named("lab"), tl: opts.Timeline, nodes: map[string]*node{}, imds: map[string]*proc{}}
}

// MotoEndpoint is moto's URL as seen from every namespace.
func (l *Lab) MotoEndpoint() string {
	return fmt.Sprintf("http://%s:%d", EndpointIP, l.opts.MotoPort)
}

// World returns what was seeded into moto.
func (l *Lab) World() World { return l.world }

// EC2 returns an SDK client talking to moto directly.
func (l *Lab) EC2() *ec2.Client { return l.ec2 }

// Dir is the lab's working directory.
func (l *Lab) Dir() string { return l.opts.Dir }

// Up removes leftovers of an earlier run, builds the namespaces, starts and seeds moto,
// starts the metadata mocks, the internet services and the data-plane stand-in.
func (l *Lab) Up(ctx context.Context) (err error) {
	if l.opts.Dir == "" {
		d, err := os.MkdirTemp("", "natganker-lab-")
		if err != nil {
			return fmt.Errorf("create lab dir: %w", err)
		}
		l.opts.Dir, l.tmpDir = d, true
	}
	if err := os.MkdirAll(l.opts.Dir, 0o755); err != nil {
		return fmt.Errorf("create lab dir: %w", err)
	}
	if l.lock, err = acquireLock(ctx, func(f string, a ...any) { l.logger.Warn(fmt.Sprintf(f, a...)) }); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	if err := RemoveAll(ctx); err != nil {
		return fmt.Errorf("remove leftovers: %w", err)
	}
	start := time.Now()
	if l.opts.Zones {
		return l.upZones(ctx, start)
	}
	if err := buildTopology(ctx); err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	l.tl.Add(time.Now(), "lab", "namespaces up: nat1 %s, nat2 %s, client %s, inet %s, EC2 endpoint %s", Nat1IP, Nat2IP, ClientIP, InetIP, EndpointIP)
	if err := l.startMoto(ctx); err != nil {
		return err
	}
	if l.world, err = seed(ctx, l.ec2, l.opts.ExtraTables); err != nil {
		return fmt.Errorf("seed moto: %w", err)
	}
	if l.opts.Proxy != nil {
		if err := l.startProxy(); err != nil {
			return err
		}
	}
	l.tl.Add(time.Now(), "moto", "seeded %s: nat1 %s, nat2 %s, EIP %s (%s) on nat1, %d route table(s) → nat1",
		l.world.VPCID, l.world.Instances[Nat1].ID, l.world.Instances[Nat2].ID, l.world.AllocationID, l.world.PublicIP, len(l.world.Tables()))
	if err := l.startServices(ctx, "priv0"); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.fol = newFollower(l.ec2, l.world, l.tl, l.opts.Logger)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.fol.run(rctx)
	}()
	if _, err := l.fol.WaitOwner(ctx, l.world.Instances[Nat1].ID, 10*time.Second); err != nil {
		return err
	}
	l.logger.Info("lab up", "took", time.Since(start).Round(time.Millisecond), "dir", l.opts.Dir)
	return nil
}

// startMoto starts moto at the lab's endpoint, logging to moto.log, and the lab's client to it.
func (l *Lab) startMoto(ctx context.Context) error {
	motoLog, err := l.logFile("moto.log")
	if err != nil {
		return err
	}
	p, err := startMoto(ctx, l.opts.MotoPort, motoLog)
	if err != nil {
		return err
	}
	l.track(p)
	l.ec2 = newEC2(l.MotoEndpoint())
	return nil
}

// startServices gives each NAT's dev the MAC moto knows its interface by, starts each NAT's
// metadata mock and inet's services, and waits until they listen.
func (l *Lab) startServices(ctx context.Context, dev string) error {
	for _, h := range l.NATs() {
		if in := l.world.Instances[h]; in.MAC != "" {
			if err := nsIP(ctx, NS(h), "link", "set", dev, "address", in.MAC); err != nil {
				return err
			}
		}
		if err := l.StartIMDS(ctx, h); err != nil {
			return err
		}
	}
	if _, err := l.startHelper(ctx, Inet, "serve", nil); err != nil {
		return err
	}
	if err := waitListening(ctx, NS(Inet), fmt.Sprintf("%s:%d", InetIP, TCPEchoPort), nil); err != nil {
		return fmt.Errorf("wait for inet services: %w", err)
	}
	return nil
}

// Close stops every process the lab started, removes the namespaces and the root link,
// and removes a temporary working directory. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	l.procs = nil
	for _, n := range l.nodes {
		procs = append(procs, n.procs()...)
	}
	l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
	if l.proxySrv != nil {
		_ = l.proxySrv.Close()
	}
	for _, p := range procs {
		p.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	// Only the run holding the lock may remove the namespaces: a lab that is still
	// waiting for another run (a test that timed out in Up) must leave that run alone.
	l.mu.Lock()
	owned := l.lock != nil
	l.mu.Unlock()
	if owned {
		err = RemoveAll(ctx)
	}
	l.mu.Lock()
	for _, f := range l.files {
		_ = f.Close()
	}
	l.files = nil
	if l.lock != nil {
		_ = l.lock.Close()
		l.lock = nil
	}
	l.mu.Unlock()
	if l.tmpDir && os.Getenv("NATGANKER_LAB_KEEP") == "" {
		_ = os.RemoveAll(l.opts.Dir)
	}
	return err
}

func (l *Lab) track(p *proc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
}

// StartIMDS starts host's metadata mock (again) and waits until it listens.
func (l *Lab) StartIMDS(ctx context.Context, host string) error {
	lw, err := l.appendLog("imds-" + host + ".log")
	if err != nil {
		return err
	}
	p, err := startIMDS(ctx, l.opts.Dir, l.world, l.world.Instances[host], lw)
	if err != nil {
		return err
	}
	l.track(p)
	l.mu.Lock()
	l.imds[host] = p
	l.mu.Unlock()
	return nil
}

// StopIMDS stops host's metadata mock. An agent reads the metadata only when it starts: one
// started while its mock is down cannot learn who it is and exits.
func (l *Lab) StopIMDS(host string) {
	l.mu.Lock()
	p := l.imds[host]
	l.imds[host] = nil
	l.mu.Unlock()
	p.Stop(2 * time.Second)
}

// IMDSRunning reports whether host's metadata mock runs.
func (l *Lab) IMDSRunning(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.imds[host]
	return p != nil && !p.Exited()
}

func (l *Lab) logFile(name string) (*os.File, error) {
	return l.openLog(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY)
}

// appendLog opens a log in the lab directory for appending, for a process started again.
func (l *Lab) appendLog(name string) (*os.File, error) {
	return l.openLog(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY)
}

func (l *Lab) openLog(name string, flag int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(l.opts.Dir, name), flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create log %s: %w", name, err)
	}
	l.mu.Lock()
	l.files = append(l.files, f)
	l.mu.Unlock()
	return f, nil
}

// startHelper runs this program as helper kind inside host's namespace.
func (l *Lab) startHelper(ctx context.Context, host, kind string, stdout io.Writer) (*proc, error) {
	argv := l.opts.HelperCmd
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own executable: %w", err)
		}
		argv = []string{exe}
	}
	cmd := nsCommand(NS(host), argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), HelperEnv+"="+kind)
	lw, err := l.logFile(kind + ".log")
	if err != nil {
		return nil, err
	}
	if stdout == nil {
		stdout = lw
	}
	p, err := startProc(kind, cmd, stdout, lw, false)
	if err != nil {
		lw.Close()
		return nil, err
	}
	go func() {
		<-p.done
		lw.Close()
	}()
	l.track(p)
	return p, nil
}

// StartTraffic starts the client's prober: UDP probes every 10 ms and one long-lived TCP
// connection to inet. It returns once the first reply came back.
func (l *Lab) StartTraffic(ctx context.Context) (*Traffic, error) {
	tr := &Traffic{}
	pr, pw := io.Pipe()
	p, err := l.startHelper(ctx, Client, "probe", pw)
	if err != nil {
		return nil, err
	}
	go func() {
		<-p.done
		pw.Close()
	}()
	go tr.consume(pr, func(at time.Time, what, msg string) {
		l.tl.Add(at, "client", "%s broke: %s", what, msg)
	})
	l.mu.Lock()
	l.traffic = tr
	l.mu.Unlock()
	if err := tr.waitReply(ctx, time.Now(), 10*time.Second); err != nil {
		return nil, fmt.Errorf("client traffic: %w", err)
	}
	return tr, nil
}

// Owner returns the host moto says holds the EIP and every route, "" when split.
func (l *Lab) Owner() string { return l.world.HostOf(l.fol.Owner()) }

// WaitOwner waits until moto shows host holding the EIP and every route and returns when
// the stand-in first saw it.
func (l *Lab) WaitOwner(ctx context.Context, host string, timeout time.Duration) (time.Time, error) {
	return l.fol.WaitOwner(ctx, l.world.Instances[host].ID, timeout)
}

// OwnerChanges returns every change of moto's converged owner seen so far.
func (l *Lab) OwnerChanges() []OwnerChange { return l.fol.Changes() }

// newKey returns a fresh base64 gossip key, the same for both agents of a lab.
func (l *Lab) gossipKey() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.key == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		l.key = base64.StdEncoding.EncodeToString(b)
	}
	return l.key
}

// ErrNoAgent reports that the agent binary is missing.
var ErrNoAgent = errors.New("natganker-agent binary not found")

// Snapshot reads the failover state from moto now.
func (l *Lab) Snapshot(ctx context.Context) (Snapshot, error) {
	return readSnapshot(ctx, l.ec2, l.world)
}

// startProxy serves the latency/throttling proxy on the endpoint address, where the NATs
// reach it, and makes it their EC2 endpoint.
func (l *Lab) startProxy() error {
	l.proxy = ec2test.NewProxy(l.MotoEndpoint(), *l.opts.Proxy)
	addr := net.JoinHostPort(EndpointIP, fmt.Sprint(l.opts.MotoPort+1))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for ec2 proxy: %w", err)
	}
	l.proxySrv = &http.Server{Handler: l.proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.proxySrv.Serve(ln) }()
	l.opts.AgentEndpoint = "http://" + addr
	l.tl.Add(time.Now(), "lab", "EC2 proxy at %s: latency %s, throttling %v", addr, l.opts.Proxy.Latency, l.opts.Proxy.Throttle)
	return nil
}

// ProxyStats returns the number of calls per EC2 action the proxy has seen (nil without
// a proxy).
func (l *Lab) ProxyStats() map[string]int {
	if l.proxy == nil {
		return nil
	}
	return l.proxy.Stats()
}

// ProxyDisplaced is how many Elastic IPs the proxy's AssociateAsEC2 disassociated because
// another was associated with their private address (0 without a proxy).
func (l *Lab) ProxyDisplaced() int {
	if l.proxy == nil {
		return 0
	}
	return l.proxy.Displaced()
}

// AgentEndpoint is the EC2 endpoint the NATs use.
func (l *Lab) AgentEndpoint() string {
	if l.opts.AgentEndpoint != "" {
		return l.opts.AgentEndpoint
	}
	return l.MotoEndpoint()
}
