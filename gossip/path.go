package gossip

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A security group, network ACL or host firewall that opens the gossip port between the
// nodes for one protocol only leaves memberlist half working. With UDP blocked, every probe
// fails over UDP and memberlist's fallback ping over TCP answers, so the peer stays alive
// while memberlist logs a warning per probe. With TCP blocked, probes and gossip work, but
// push/pull fails every interval, and a node that is not a member yet can never join. The
// pathWatch below turns what memberlist reports into one note per peer, said once, in words
// an operator can act on.

// Path thresholds. Packet loss alone must not get a peer noted: a lost UDP probe is also
// answered over TCP only, and a lost SYN can fail a push/pull.
const (
	// udpBlockedAfter is how long a peer's probes must have been answered over TCP and
	// never over UDP before UDP counts as blocked.
	udpBlockedAfter = 5 * time.Second
	// udpWorksAfter UDP answers in a row from a peer clear its UDP note.
	udpWorksAfter = 10
	// tcpBlockedAfter TCP connections in a row to a peer that could not be opened, followed
	// by an answer over UDP, make TCP count as blocked.
	tcpBlockedAfter = 2
	// tcpWorksAfter TCP connections in a row with a peer clear its TCP note.
	tcpWorksAfter = 2
	// tcpFailFresh is how recent the latest failed connection must be for an answer over
	// UDP to complete the picture.
	tcpFailFresh = 30 * time.Second
	// pathForget drops what is known about a peer nothing has been heard about for so long:
	// one that died or was removed.
	pathForget = time.Minute
)

// PathProblem is a peer whose gossip port answers over one protocol and not the other.
type PathProblem struct {
	// Addr is the peer's gossip address, host:port.
	Addr string
	// Name is the peer's node name when it has been a member; empty when it never joined.
	Name string
	// Blocked is the protocol that does not get through: "udp" or "tcp".
	Blocked string
	// Joining: this node could not join the peer (rather than sync with a member).
	Joining bool
	// Note says what is blocked and what to open, in one line.
	Note string
	// Since is when this node concluded it.
	Since time.Time
}

// pathState is what one peer's probes and connections have shown lately.
type pathState struct {
	name string
	addr string // host:port of its gossip port
	last time.Time

	// tcpOnly counts the probes in a row the peer answered over TCP only, since
	// tcpOnlySince; udpAcks the UDP answers in a row.
	tcpOnly      int
	tcpOnlySince time.Time
	tcpOnlyLast  time.Time
	udpAcks      int

	// tcpFails counts the connections in a row that could not be opened, the latest at
	// tcpFailLast; tcpOKs the connections in a row that could.
	tcpFails    int
	tcpFailLast time.Time
	tcpOKs      int
	joining     bool

	problem *PathProblem
}

// pathWatch keeps a pathState per peer IP and logs when a problem starts and ends.
type pathWatch struct {
	logger hclog.Logger
	// changed is called, without any lock held, with the address of a peer whose problem
	// started or ended.
	changed func(addr string)
	// heard is called, without any lock held, with the name of a peer that answered a probe
	// over TCP only: it is alive all the same.
	heard func(name string)
	now   func() time.Time

	// Thresholds, set from the constants above; tests shorten them.
	udpAfter  time.Duration
	tcpFresh  time.Duration
	forgetAge time.Duration

	mu    sync.Mutex
	peers map[string]*pathState // by IP
}

func newPathWatch(logger hclog.Logger, changed func(addr string), heard func(name string)) *pathWatch {
	return &pathWatch{logger: logger, changed: changed, heard: heard, now: time.Now,
		udpAfter: udpBlockedAfter, tcpFresh: tcpFailFresh, forgetAge: pathForget,
		peers: map[string]*pathState{}}
}

// peer returns the state for addr's host, creating it. Call with p.mu held.
func (p *pathWatch) peer(addr, name string) *pathState {
	host := hostOf(addr)
	s := p.peers[host]
	if s == nil {
		s = &pathState{}
		p.peers[host] = s
	}
	if name != "" {
		s.name = name
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		s.addr = addr
	} else if s.addr == "" {
		s.addr = addr
	}
	s.last = p.now()
	return s
}

// tcpOnly notes a probe the peer answered over TCP while its UDP probes went unanswered.
func (p *pathWatch) tcpOnly(addr, name string) {
	p.update(addr, name, func(s *pathState, now time.Time) {
		if s.tcpOnly == 0 {
			s.tcpOnlySince = now
		}
		s.tcpOnly++
		s.tcpOnlyLast = now
		s.udpAcks = 0
		p.tcpWorked(s)
		if s.tcpOnly >= 3 && now.Sub(s.tcpOnlySince) >= p.udpAfter {
			p.set(s, "udp", now)
		}
	})
}

// udpAck notes an answer from the peer over UDP.
func (p *pathWatch) udpAck(addr, name string) {
	p.update(addr, name, func(s *pathState, now time.Time) {
		s.udpAcks++
		s.tcpOnly = 0
		if s.problem != nil && s.problem.Blocked == "udp" && s.udpAcks >= udpWorksAfter {
			p.clear(s)
		}
		if s.tcpFails >= tcpBlockedAfter && now.Sub(s.tcpFailLast) <= p.tcpFresh {
			p.set(s, "tcp", now)
		}
	})
}

// tcpFailed notes a TCP connection to the peer's gossip port that could not be opened;
// joining says it was an attempt to join it.
func (p *pathWatch) tcpFailed(addr, name string, joining bool) {
	p.update(addr, name, func(s *pathState, now time.Time) {
		s.tcpFails++
		s.tcpFailLast = now
		s.tcpOKs = 0
		s.joining = joining
	})
}

// tcpOK notes a TCP connection with the peer's gossip port, either way.
func (p *pathWatch) tcpOK(addr, name string) {
	p.update(addr, name, func(s *pathState, now time.Time) { p.tcpWorked(s) })
}

func (p *pathWatch) tcpWorked(s *pathState) {
	s.tcpFails = 0
	s.tcpOKs++
	if s.problem != nil && s.problem.Blocked == "tcp" && s.tcpOKs >= tcpWorksAfter {
		p.clear(s)
	}
}

// update applies fn to addr's state and reports a change of its problem to p.changed.
func (p *pathWatch) update(addr, name string, fn func(s *pathState, now time.Time)) {
	if addr == "" {
		return
	}
	p.mu.Lock()
	s := p.peer(addr, name)
	before := s.problem
	fn(s, s.last)
	changed := s.problem != before
	at := s.addr
	p.mu.Unlock()
	if changed && p.changed != nil {
		p.changed(at)
	}
}

// set records that proto is blocked to s and says so. Call with p.mu held.
func (p *pathWatch) set(s *pathState, proto string, now time.Time) {
	joining := proto == "tcp" && s.joining
	if s.problem != nil && s.problem.Blocked == proto && s.problem.Joining == joining {
		return
	}
	if s.problem != nil && s.problem.Blocked != proto {
		// Each protocol has been seen to work since: the other one's note is out of date.
		p.clear(s)
	}
	// A member that left and now cannot join again is news too.
	pr := &PathProblem{Addr: s.addr, Name: s.name, Blocked: proto, Joining: joining, Since: now}
	pr.Note = pathNote(pr)
	s.problem = pr
	args := []any{"address", s.addr}
	if s.name != "" {
		args = append(args, "peer", s.name)
	}
	port := portOf(s.addr)
	switch {
	case proto == "udp":
		p.logger.Warn(fmt.Sprintf("UDP to the peer's gossip port is blocked, TCP gets through: open UDP %s between the NAT instances (security group, network ACL, host firewall); until then failure detection runs on memberlist's TCP fallback ping", port), args...)
	case pr.Joining:
		p.logger.Warn(fmt.Sprintf("cannot join the peer: TCP to its gossip port is blocked, UDP gets through: open TCP %s between the NAT instances (security group, network ACL, host firewall)", port), args...)
	default:
		p.logger.Warn(fmt.Sprintf("TCP to the peer's gossip port is blocked, UDP gets through: open TCP %s between the NAT instances (security group, network ACL, host firewall); until then state sync fails and a restarted node cannot rejoin", port), args...)
	}
}

// clear ends s's problem and says so. Call with p.mu held.
func (p *pathWatch) clear(s *pathState) {
	if s.problem == nil {
		return
	}
	args := []any{"address", s.addr}
	if s.name != "" {
		args = append(args, "peer", s.name)
	}
	p.logger.Info(fmt.Sprintf("%s to the peer's gossip port works again", strings.ToUpper(s.problem.Blocked)), args...)
	s.problem = nil
}

// pathNote is the one-line note members shows for pr.
func pathNote(pr *PathProblem) string {
	port := portOf(pr.Addr)
	switch {
	case pr.Blocked == "udp":
		return "UDP to the gossip port is blocked (TCP works): open UDP " + port + " between the NAT instances"
	case pr.Joining:
		return "cannot join: TCP to the gossip port is blocked (UDP works): open TCP " + port + " between the NAT instances"
	default:
		return "TCP to the gossip port is blocked (UDP works): open TCP " + port + " between the NAT instances"
	}
}

// problem returns the current problem with addr's host, if any.
func (p *pathWatch) problem(addr string) *PathProblem {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget()
	if s := p.peers[hostOf(addr)]; s != nil && s.problem != nil {
		pr := *s.problem
		return &pr
	}
	return nil
}

// udpBlocked reports whether the peer at addr answered memberlist's latest probe over TCP
// only. memberlist's TCP ping is sealed with the gossip key: the peer holds this node's key.
func (p *pathWatch) udpBlocked(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.peers[hostOf(addr)]
	return s != nil && s.tcpOnly > 0 && p.now().Sub(s.tcpOnlyLast) < p.forgetAge
}

// list returns every current problem, sorted by address.
func (p *pathWatch) list() []PathProblem {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget()
	var out []PathProblem
	for _, s := range p.peers {
		if s.problem != nil {
			out = append(out, *s.problem)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// forget drops peers nothing was heard about for forgetAge. Call with p.mu held.
func (p *pathWatch) forget() {
	now := p.now()
	for host, s := range p.peers {
		if now.Sub(s.last) >= p.forgetAge {
			if s.problem != nil {
				p.logger.Debug("nothing heard from the peer for a while: forgetting its path problem", "address", s.addr, "problem", s.problem.Note)
			}
			delete(p.peers, host)
		}
	}
}

// memberlist's words for what the pathWatch follows (hashicorp/memberlist v0.7.0, state.go
// and net.go).
const (
	mlTCPOnly     = "memberlist: Was able to connect to " // NAME over TCP but UDP probes failed, …
	mlTCPOnlyTail = " over TCP but UDP probes failed"
	mlPushPull    = "memberlist: Push/Pull with "                  // NAME failed: ERR
	mlPushPullOK  = "memberlist: Initiating push/pull sync with: " // NAME HOST:PORT
	mlStreamFrom  = "memberlist: Stream connection from="          // HOST:PORT
	mlDial        = "dial tcp "                                    // HOST:PORT: reason
)

// observe feeds one memberlist log line to the watch. It returns true when the line only
// repeats a problem that is already noted, so that it can go to the debug log instead of
// once per probe at warn. addrOf maps a node name to its gossip address.
func (p *pathWatch) observe(line string, addrOf func(name string) string) (repeat bool) {
	switch {
	case strings.Contains(line, mlTCPOnly) && strings.Contains(line, mlTCPOnlyTail):
		rest := line[strings.Index(line, mlTCPOnly)+len(mlTCPOnly):]
		name := rest[:strings.Index(rest, mlTCPOnlyTail)]
		addr := addrOf(name)
		if addr == "" {
			return false
		}
		p.tcpOnly(addr, name)
		if p.heard != nil {
			p.heard(name)
		}
		return p.noted(addr, "udp")
	case strings.Contains(line, mlPushPull) && strings.Contains(line, mlDial):
		rest := line[strings.Index(line, mlPushPull)+len(mlPushPull):]
		name, _, _ := strings.Cut(rest, " failed: ")
		addr := dialAddr(line)
		if addr == "" {
			return false
		}
		p.tcpFailed(addr, name, false)
		return p.noted(addr, "tcp")
	case strings.Contains(line, mlPushPullOK):
		f := strings.Fields(line[strings.Index(line, mlPushPullOK)+len(mlPushPullOK):])
		if len(f) > 0 {
			name := ""
			if len(f) > 1 {
				name = f[0]
			}
			p.tcpOK(f[len(f)-1], name)
		}
	case strings.Contains(line, mlStreamFrom):
		f := strings.Fields(line[strings.Index(line, mlStreamFrom)+len(mlStreamFrom):])
		if len(f) > 0 {
			// The other side dialled from an ephemeral port: only the host says who it is,
			// and only a peer already known is worth a state.
			p.mu.Lock()
			_, known := p.peers[hostOf(f[0])]
			p.mu.Unlock()
			if known {
				p.tcpOK(f[0], "")
			}
		}
	}
	return false
}

// noted reports whether proto is already noted as blocked to addr's host.
func (p *pathWatch) noted(addr, proto string) bool {
	pr := p.problem(addr)
	return pr != nil && pr.Blocked == proto
}

// dialAddr returns the address in a Go "dial tcp HOST:PORT: reason" error, or "".
func dialAddr(s string) string {
	i := strings.Index(s, mlDial)
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+len(mlDial):])
	if len(f) == 0 {
		return ""
	}
	addr := strings.TrimSuffix(f[0], ":")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return ""
	}
	return addr
}

// hostOf returns the host of a host:port address, or addr itself.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// portOf returns the port of a host:port address, or "the gossip port" when there is none.
func portOf(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil {
		if _, err := strconv.Atoi(port); err == nil {
			return port
		}
	}
	return "the gossip port"
}
