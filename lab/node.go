package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// node is what runs on one NAT: a natganker agent or keepalived.
type node struct {
	host    string
	mech    Mechanism
	variant AgentVariant
	mu      sync.Mutex
	p       *proc
}

// AgentVariant changes what an agent is started with, as the chaos run's faults need: a
// gossip key of its own, or another priority. The zero value is the lab's normal config.
type AgentVariant struct {
	// GossipKey replaces the key both agents share (base64) when set.
	GossipKey string
	// Priority replaces the host's priority in the group when non-zero.
	Priority int
}

// DefaultPriority is the priority the lab gives host's agent: nat1 outranks nat2.
func DefaultPriority(host string) int {
	if host == Nat1 {
		return 200
	}
	return 100
}

// SetAgentVariant makes the next start of host's agent use v (the zero value restores the
// normal config).
func (l *Lab) SetAgentVariant(host string, v AgentVariant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.nodes[host]
	if n == nil {
		n = &node{host: host, mech: Natganker}
		l.nodes[host] = n
	}
	n.variant = v
}

func (n *node) procs() []*proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil {
		return nil
	}
	return []*proc{n.p}
}

// Takeover is one "takeover" line an agent logged.
type Takeover struct {
	At     time.Time // the line's timestamp
	Host   string    // the agent that logged it
	Group  string
	From   string
	To     string
	Reason string
	// DetectedAt is when the trigger (the owner's death as gossip reported it, a broken
	// datapath…) was seen; Started is when the agent decided to claim (DetectedAt +
	// DetectedMS). The other phases count from Started, in milliseconds.
	DetectedAt, Started                                  time.Time
	DetectedMS, ConfirmedMS, EIPMS, RoutesMS, VerifiedMS float64
}

// Transition is one keepalived VRRP state change.
type Transition struct {
	At    time.Time
	Host  string
	State string // MASTER, BACKUP, FAULT
}

// logRecorder keeps what the lab parses out of agent and keepalived output.
type logRecorder struct {
	mu          sync.Mutex
	takeovers   []Takeover
	transitions []Transition
}

// AgentSocket is the control socket of the agent on host.
func (l *Lab) AgentSocket(host string) string {
	return filepath.Join(l.opts.Dir, host+".sock")
}

// agentConfig renders the HCL configuration of the agent on host. It is a normal
// production config: only the EC2 endpoint says it is in a lab.
func (l *Lab) agentConfig(host string) string {
	peer, prio, key := Peer(host), DefaultPriority(host), l.gossipKey()
	l.mu.Lock()
	if n := l.nodes[host]; n != nil {
		if n.variant.Priority != 0 {
			prio = n.variant.Priority
		}
		if n.variant.GossipKey != "" {
			key = n.variant.GossipKey
		}
	}
	l.mu.Unlock()
	endpoint := l.opts.AgentEndpoint
	if endpoint == "" {
		endpoint = l.MotoEndpoint()
	}
	tables := make([]string, 0, len(l.world.Tables()))
	for _, t := range l.world.Tables() {
		tables = append(tables, fmt.Sprintf("%q", t))
	}
	failback := `failback = "auto"`
	if l.opts.FailbackDelay > 0 {
		failback += fmt.Sprintf("\n  failback_delay = %q", l.opts.FailbackDelay.String())
	}
	return fmt.Sprintf(`# natganker agent on lab host %[1]s
gossip {
  bind        = "%[2]s:7946"
  peers       = ["%[3]s"]
  encrypt_key = "%[4]s"
}

group "egress" {
  priority     = %[5]d
  elastic_ip   = "%[6]s"
  route_tables = [%[7]s]
  %[8]s
}

ec2 {
  endpoint = "%[9]s"
  region   = "%[10]s"
}

control {
  socket     = "%[11]s"
  state_file = "%[12]s"
}

log {
  level  = "info"
  format = "json"
}

datapath {
  manage           = true
  public_interface = "pub0"
}
`, host, natIP(host), natIP(peer), key, prio, l.world.AllocationID, strings.Join(tables, ", "),
		failback, endpoint, Region, l.AgentSocket(host), filepath.Join(l.opts.Dir, host+"-state.json"))
}

// StartNode starts the failover mechanism on a NAT host.
func (l *Lab) StartNode(ctx context.Context, host string, mech Mechanism) error {
	l.mu.Lock()
	n := l.nodes[host]
	if n == nil {
		n = &node{host: host, mech: mech}
		l.nodes[host] = n
	}
	n.mech = mech
	l.mu.Unlock()
	switch mech {
	case Natganker:
		return l.startAgent(ctx, n)
	case Keepalived:
		return l.startKeepalived(ctx, n)
	}
	return fmt.Errorf("unknown mechanism %q", mech)
}

// startAgent writes the config and runs natganker-agent in host's namespace, parsing its
// JSON log lines.
func (l *Lab) startAgent(ctx context.Context, n *node) error {
	if l.opts.AgentBin == "" {
		return ErrNoAgent
	}
	if _, err := os.Stat(l.opts.AgentBin); err != nil {
		return fmt.Errorf("%w: %w", ErrNoAgent, err)
	}
	cfg := filepath.Join(l.opts.Dir, n.host+".hcl")
	config := l.agentConfig
	if l.opts.Zones {
		config = l.zonesAgentConfig
	}
	if err := os.WriteFile(cfg, []byte(config(n.host)+l.metricsConfig(n.host)+l.syncConfig()), 0o600); err != nil {
		return fmt.Errorf("write agent config: %w", err)
	}
	// An agent started while its metadata mock is down cannot learn who it is.
	if !l.IMDSRunning(n.host) {
		l.tl.Add(time.Now(), "lab", "metadata mock on %s is down: starting it before the agent", n.host)
		if err := l.StartIMDS(ctx, n.host); err != nil {
			return err
		}
	}
	_ = os.Remove(l.AgentSocket(n.host))
	cmd := nsCommand(NS(n.host), l.opts.AgentBin, "run", "-config", cfg)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=lab", "AWS_SECRET_ACCESS_KEY=lab")
	// The agent logs to stderr; only that is parsed.
	return l.startNodeProc(n, "agent", "natganker-agent", cmd, false, l.parseAgentLog)
}

// startNodeProc runs cmd as n's failover process, logging to kind-HOST.log in the lab
// directory and feeding its stderr (and stdout too, when parseStdout is set) to parse.
func (l *Lab) startNodeProc(n *node, kind, what string, cmd *exec.Cmd, parseStdout bool, parse func(host string, r io.Reader)) error {
	lf, err := os.OpenFile(filepath.Join(l.opts.Dir, kind+"-"+n.host+".log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", kind, err)
	}
	pr, pw := io.Pipe()
	var stdout io.Writer = lf
	if parseStdout {
		stdout = io.MultiWriter(lf, pw)
	}
	p, err := startProc(kind+"-"+n.host, cmd, stdout, io.MultiWriter(lf, pw), false)
	if err != nil {
		lf.Close()
		return err
	}
	go func() {
		<-p.done
		pw.Close()
		lf.Close()
		l.noteExit(n, p)
	}()
	go parse(n.host, pr)
	n.mu.Lock()
	n.p = p
	n.mu.Unlock()
	l.tl.Add(time.Now(), n.host, "%s started (pid %d)", what, p.cmd.Process.Pid)
	return nil
}

// agentLogKeys are the keys shown in the timeline after an agent's message.
var agentLogKeys = []string{"group", "from", "to", "reason", "peer", "member", "owner", "error", "problem", "key", "new", "eip", "route_table", "target",
	"answered", "gossip_port_open", "probe_ms", "detected_ms", "confirmed_ms", "eip_ms", "routes_ms", "verified_ms"}

func (l *Lab) parseAgentLog(host string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		at := time.Now()
		if s, ok := m["@timestamp"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				at = t
			}
		}
		msg, _ := m["@message"].(string)
		level, _ := m["@level"].(string)
		if msg == "takeover" {
			tk := Takeover{At: at, Host: host}
			tk.Group, _ = m["group"].(string)
			tk.From, _ = m["from"].(string)
			tk.To, _ = m["to"].(string)
			tk.Reason, _ = m["reason"].(string)
			tk.DetectedMS = num(m["detected_ms"])
			tk.ConfirmedMS = num(m["confirmed_ms"])
			tk.EIPMS = num(m["eip_ms"])
			tk.RoutesMS = num(m["routes_ms"])
			tk.VerifiedMS = num(m["verified_ms"])
			if s, ok := m["detected_at"].(string); ok {
				if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
					tk.DetectedAt = t
					tk.Started = t.Add(time.Duration(tk.DetectedMS * float64(time.Millisecond)))
				}
			}
			l.rec.mu.Lock()
			l.rec.takeovers = append(l.rec.takeovers, tk)
			l.rec.mu.Unlock()
		}
		if level == "debug" || level == "trace" {
			continue
		}
		var kv []string
		for _, k := range agentLogKeys {
			if v, ok := m[k]; ok {
				kv = append(kv, fmt.Sprintf("%s=%v", k, v))
			}
		}
		text := msg
		if len(kv) > 0 {
			text += "  " + strings.Join(kv, " ")
		}
		if level != "" && level != "info" {
			text = "[" + level + "] " + text
		}
		l.tl.Add(at, host, "%s", text)
	}
}

func num(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		var f float64
		_, _ = fmt.Sscan(x, &f)
		return f
	}
	return 0
}

// Takeovers returns the takeover lines logged by the agents so far.
func (l *Lab) Takeovers() []Takeover {
	l.rec.mu.Lock()
	defer l.rec.mu.Unlock()
	return append([]Takeover(nil), l.rec.takeovers...)
}

// Transitions returns the keepalived state changes seen so far.
func (l *Lab) Transitions() []Transition {
	l.rec.mu.Lock()
	defer l.rec.mu.Unlock()
	return append([]Transition(nil), l.rec.transitions...)
}

// KillHost hard-kills a NAT as a dead instance looks from outside: its own interfaces go
// down (the switch keeps carrier towards the peer) and its failover process gets
// SIGKILL. It returns the moment of the kill: when both links are down, so that no probe
// sent after it can still pass through the host.
func (l *Lab) KillHost(ctx context.Context, host string) (time.Time, error) {
	for _, dev := range l.natLinks() {
		if err := nsIP(ctx, NS(host), "link", "set", dev, "down"); err != nil {
			return time.Now(), fmt.Errorf("kill %s: %w", host, err)
		}
	}
	at := time.Now()
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n != nil {
		n.mu.Lock()
		p := n.p
		n.p = nil
		n.mu.Unlock()
		p.Kill()
		if n.mech == Keepalived {
			// keepalived's children are in its process group, but be sure none survive.
			killKeepalivedIn(ctx, host)
		}
	}
	l.tl.Add(at, "lab", "HARD KILL %s: %s down, failover process SIGKILLed", host, strings.Join(l.natLinks(), " and "))
	return at, nil
}

// natLinks are a NAT's interfaces: private and public, or the one interface of a zones-lab NAT.
func (l *Lab) natLinks() []string {
	if l.opts.Zones {
		return []string{"eth0"}
	}
	return []string{"priv0", "pub0"}
}

// ReviveHost brings a killed NAT back: links up, then its failover process restarted.
func (l *Lab) ReviveHost(ctx context.Context, host string) error {
	for _, dev := range l.natLinks() {
		if err := setLink(ctx, host, dev, true); err != nil {
			return fmt.Errorf("revive %s: %w", host, err)
		}
	}
	l.tl.Add(time.Now(), "lab", "REVIVE %s: links up", host)
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n == nil {
		return nil
	}
	return l.StartNode(ctx, host, n.mech)
}

// StopNode ends the failover process on host without touching its links: SIGTERM, and
// SIGKILL after 5 s.
func (l *Lab) StopNode(host string) { l.StopNodeGrace(host, 5*time.Second) }

// StopNodeGrace sends SIGTERM to the failover process on host and SIGKILLs it when it has not
// exited after grace. An agent hands its groups over before it exits, for up to 10 s.
func (l *Lab) StopNodeGrace(host string, grace time.Duration) {
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n == nil {
		return
	}
	n.mu.Lock()
	p := n.p
	n.p = nil
	n.mu.Unlock()
	p.Stop(grace)
	if n.mech == Keepalived {
		killKeepalivedIn(context.Background(), host)
	}
}

// KillNode SIGKILLs the failover process on host and leaves its links and datapath as they
// are: the agent dies, the instance keeps forwarding.
func (l *Lab) KillNode(host string) {
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n == nil {
		return
	}
	n.mu.Lock()
	p := n.p
	n.p = nil
	n.mu.Unlock()
	p.Kill()
}

// AgentCtl runs an agent CLI command (members, status, yield, resume, takeover) against
// the agent on host and returns its output.
func (l *Lab) AgentCtl(ctx context.Context, host string, args ...string) (string, error) {
	if len(args) == 0 {
		return "", fmt.Errorf("agent command: missing subcommand")
	}
	argv := append([]string{args[0], "-socket", l.AgentSocket(host)}, args[1:]...)
	return run(ctx, l.opts.AgentBin, argv...)
}

// noteExit records on the timeline a failover process that ended without the lab ending
// it: an agent that crashed or exited.
func (l *Lab) noteExit(n *node, p *proc) {
	n.mu.Lock()
	current := n.p == p
	n.mu.Unlock()
	if current {
		l.tl.Add(time.Now(), n.host, "[error] %s exited on its own: %v", p.name, p.err)
	}
}

// NodePID returns the process id of the failover process on host, 0 when none runs. The lab
// starts it through `ip netns exec`, which execs it in place: the id is the agent's own.
func (l *Lab) NodePID(host string) int {
	if p := l.nodeProc(host); p != nil && !p.Exited() {
		return p.cmd.Process.Pid
	}
	return 0
}

// nodeProc returns the failover process on host, nil when none was started.
func (l *Lab) nodeProc(host string) *proc {
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p
}

// NodeRunning reports whether the failover process on host is running.
func (l *Lab) NodeRunning(host string) bool {
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p != nil && !n.p.Exited()
}
