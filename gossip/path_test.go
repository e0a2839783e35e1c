package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logBuffer collects JSON log lines from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// entry is one logged line.
type entry struct{ level, msg string }

// lines returns the entries whose message contains substr.
func (b *logBuffer) lines(substr string) []entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []entry
	for _, l := range strings.Split(b.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		msg, _ := m["@message"].(string)
		level, _ := m["@level"].(string)
		if strings.Contains(msg, substr) {
			out = append(out, entry{level, msg})
		}
	}
	return out
}

func newLogBuffer() (*logBuffer, hclog.Logger) {
	b := &logBuffer{}
	return b, hclog.New(&hclog.LoggerOptions{Output: b, Level: hclog.Debug, JSONFormat: true})
}

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time              { return c.t }
func (c *fakeClock) add(d time.Duration)         { c.t = c.t.Add(d) }
func (c *fakeClock) set(w *pathWatch) *fakeClock { w.now = c.now; return c }

const (
	peerName = "i-b"
	peerAddr = "10.0.0.12:7946"
)

var (
	tcpOnlyLine  = "[WARN] memberlist: Was able to connect to " + peerName + " over TCP but UDP probes failed, network may be misconfigured"
	pushPullFail = "[ERR] memberlist: Push/Pull with " + peerName + " failed: dial tcp " + peerAddr + ": i/o timeout"
	pushPullOK   = "[DEBUG] memberlist: Initiating push/pull sync with: " + peerName + " " + peerAddr
	streamFrom   = "[DEBUG] memberlist: Stream connection from=10.0.0.12:40312"
)

func addrOfPeer(name string) string {
	if name == peerName {
		return peerAddr
	}
	return ""
}

// TestPathWatch drives the detector with memberlist's own log lines and a clock of its own.
func TestPathWatch(t *testing.T) {
	type watch struct {
		w       *pathWatch
		clock   *fakeClock
		logs    *logBuffer
		changes *[]string
	}
	newWatch := func() watch {
		logs, logger := newLogBuffer()
		var changes []string
		w := newPathWatch(logger, func(addr string) { changes = append(changes, addr) }, nil)
		c := (&fakeClock{t: time.Unix(1e9, 0)}).set(w)
		return watch{w, c, logs, &changes}
	}
	const probe = 400 * time.Millisecond // what a probe answered over TCP only takes, at 200 ms

	t.Run("UDPBlocked", func(t *testing.T) {
		x := newWatch()
		heard := 0
		x.w.heard = func(name string) { heard++ }
		start := x.clock.now()
		var repeats int
		for x.clock.now().Sub(start) < udpBlockedAfter+2*time.Second {
			if x.w.observe(tcpOnlyLine, addrOfPeer) {
				repeats++
			}
			if x.clock.now().Sub(start) < udpBlockedAfter && x.w.problem(peerAddr) != nil {
				t.Fatalf("UDP noted blocked after %v of TCP-only answers, want %v", x.clock.now().Sub(start), udpBlockedAfter)
			}
			x.clock.add(probe)
		}
		pr := x.w.problem(peerAddr)
		if pr == nil || pr.Blocked != "udp" || pr.Name != peerName || pr.Addr != peerAddr {
			t.Fatalf("problem after %v of TCP-only answers = %+v, want UDP blocked to %s", udpBlockedAfter+2*time.Second, pr, peerAddr)
		}
		if want := "UDP to the gossip port is blocked (TCP works): open UDP 7946 between the NAT instances"; pr.Note != want {
			t.Errorf("note = %q, want %q", pr.Note, want)
		}
		if heard == 0 {
			t.Error("a probe answered over TCP did not count as a sign of life")
		}
		if repeats == 0 {
			t.Error("memberlist's warning is not demoted once the problem is logged")
		}
		warns := x.logs.lines("UDP to the peer's gossip port is blocked")
		if len(warns) != 1 || warns[0].level != "warn" || !strings.Contains(warns[0].msg, "open UDP 7946 between the NAT instances") {
			t.Fatalf("warnings = %+v, want one at warn naming UDP 7946", warns)
		}
		if len(*x.changes) != 1 || (*x.changes)[0] != peerAddr {
			t.Errorf("changes reported = %v, want [%s]", *x.changes, peerAddr)
		}
		if !x.w.udpBlocked(peerAddr) {
			t.Error("udpBlocked is false while the peer answers over TCP only")
		}

		// UDP comes back: the note stays until it has worked for a while, then goes, once.
		for i := 1; i < udpWorksAfter; i++ {
			x.w.udpAck(peerAddr, peerName)
		}
		if x.w.problem(peerAddr) == nil {
			t.Fatalf("note cleared after %d UDP answers, want %d", udpWorksAfter-1, udpWorksAfter)
		}
		if x.w.udpBlocked(peerAddr) {
			t.Error("udpBlocked is still true after UDP answers")
		}
		x.w.udpAck(peerAddr, peerName)
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("note after %d UDP answers = %+v, want none", udpWorksAfter, pr)
		}
		if got := x.logs.lines("UDP to the peer's gossip port works again"); len(got) != 1 || got[0].level != "info" {
			t.Errorf("all-clear lines = %+v, want one at info", got)
		}
		if len(*x.changes) != 2 {
			t.Errorf("changes reported = %v, want two", *x.changes)
		}
	})

	t.Run("LossIsNotABlock", func(t *testing.T) {
		// Heavy loss: two probes in three answered over TCP only, for a long time.
		x := newWatch()
		for i := 0; i < 300; i++ {
			if i%3 == 2 {
				x.w.udpAck(peerAddr, peerName)
			} else if x.w.observe(tcpOnlyLine, addrOfPeer) {
				t.Fatal("a line was demoted with no problem noted")
			}
			x.clock.add(probe)
		}
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("lossy UDP noted as %+v", pr)
		}
	})

	t.Run("TCPBlocked", func(t *testing.T) {
		x := newWatch()
		x.w.udpAck(peerAddr, peerName)
		if x.w.observe(pushPullFail, addrOfPeer) {
			t.Fatal("first push/pull failure demoted")
		}
		x.clock.add(time.Second)
		x.w.udpAck(peerAddr, peerName)
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("one failed push/pull noted as %+v", pr)
		}
		x.clock.add(10 * time.Second)
		x.w.observe(pushPullFail, addrOfPeer)
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("noted before the peer answered over UDP since: %+v", pr)
		}
		x.clock.add(200 * time.Millisecond)
		x.w.udpAck(peerAddr, peerName)
		pr := x.w.problem(peerAddr)
		if pr == nil || pr.Blocked != "tcp" || pr.Joining {
			t.Fatalf("problem = %+v, want TCP blocked to a member", pr)
		}
		if want := "TCP to the gossip port is blocked (UDP works): open TCP 7946 between the NAT instances"; pr.Note != want {
			t.Errorf("note = %q, want %q", pr.Note, want)
		}
		if !x.w.observe(pushPullFail, addrOfPeer) {
			t.Error("push/pull failure not demoted once the problem is logged")
		}
		x.w.udpAck(peerAddr, peerName)
		warns := x.logs.lines("TCP to the peer's gossip port is blocked")
		if len(warns) != 1 || warns[0].level != "warn" || !strings.Contains(warns[0].msg, "open TCP 7946") {
			t.Fatalf("warnings = %+v, want one at warn naming TCP 7946", warns)
		}

		// TCP works again: a push/pull of ours and one of the peer's clear it.
		x.w.observe(pushPullOK, addrOfPeer)
		if x.w.problem(peerAddr) == nil {
			t.Fatal("cleared after one connection")
		}
		x.w.observe(streamFrom, addrOfPeer)
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("still noted after two connections: %+v", pr)
		}
		if got := x.logs.lines("TCP to the peer's gossip port works again"); len(got) != 1 {
			t.Errorf("all-clear lines = %+v, want one", got)
		}
	})

	t.Run("DeadPeerIsNotABlock", func(t *testing.T) {
		// A peer that dies fails its push/pull after its last UDP answer, and never answers
		// again: nothing to note.
		x := newWatch()
		x.w.udpAck(peerAddr, peerName)
		x.w.observe(pushPullFail, addrOfPeer)
		x.clock.add(10 * time.Second)
		x.w.observe(pushPullFail, addrOfPeer)
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("dead peer noted as %+v", pr)
		}
		// A UDP answer long after the failures does not complete the picture either.
		x.clock.add(tcpFailFresh + time.Second)
		x.w.udpAck(peerAddr, peerName)
		if pr := x.w.problem(peerAddr); pr != nil {
			t.Fatalf("stale TCP failures noted as %+v", pr)
		}
	})

	t.Run("CannotJoin", func(t *testing.T) {
		x := newWatch()
		for i := 0; i < tcpBlockedAfter; i++ {
			x.w.tcpFailed(peerAddr, "", true)
			x.w.udpAck(peerAddr, "")
			x.clock.add(5 * time.Second)
		}
		l := x.w.list()
		if len(l) != 1 || l[0].Blocked != "tcp" || !l[0].Joining || l[0].Addr != peerAddr || l[0].Name != "" {
			t.Fatalf("problems = %+v, want a peer that cannot join", l)
		}
		if !strings.HasPrefix(l[0].Note, "cannot join: TCP to the gossip port is blocked (UDP works): open TCP 7946") {
			t.Errorf("note = %q", l[0].Note)
		}
		if w := x.logs.lines("cannot join the peer: TCP to its gossip port is blocked"); len(w) != 1 || w[0].level != "warn" {
			t.Errorf("warnings = %+v, want one", w)
		}
		// It joins after all (over UDP: memberlist piggybacks alive messages on pings), its
		// push/pull fails: the note changes, once.
		x.w.observe(pushPullFail, addrOfPeer)
		x.w.udpAck(peerAddr, peerName)
		if pr := x.w.problem(peerAddr); pr == nil || pr.Joining || pr.Name != peerName {
			t.Fatalf("problem once a member = %+v, want TCP blocked to member %s", pr, peerName)
		}
		if w := x.logs.lines("TCP to the peer's gossip port is blocked"); len(w) != 1 {
			t.Errorf("warnings once a member = %+v, want one", w)
		}
		// It leaves, and cannot join again: news again.
		x.w.tcpFailed(peerAddr, "", true)
		x.w.udpAck(peerAddr, "")
		if pr := x.w.problem(peerAddr); pr == nil || !pr.Joining {
			t.Fatalf("problem after the member left = %+v, want it cannot join", pr)
		}
		if w := x.logs.lines("cannot join the peer"); len(w) != 2 {
			t.Errorf("cannot-join warnings = %+v, want two", w)
		}
		if n := len(*x.changes); n != 3 {
			t.Errorf("%d changes reported, want 3", n)
		}
		// Nothing heard for a while: the peer is gone, and so is the note.
		x.clock.add(pathForget)
		if l := x.w.list(); len(l) != 0 {
			t.Fatalf("problems after %v of silence = %+v", pathForget, l)
		}
	})
}

// TestMemberlistLog_DemotesRepeats checks what reaches the log through memberlist's logger:
// memberlist's warning at its own level until the problem is logged, at debug afterwards.
func TestMemberlistLog_DemotesRepeats(t *testing.T) {
	logs, logger := newLogBuffer()
	w := newPathWatch(logger, nil, nil)
	c := (&fakeClock{t: time.Unix(1e9, 0)}).set(w)
	ml := &memberlistLog{keys: newKeyWatch(logger), path: w, addrOf: addrOfPeer,
		next: logger.Named("memberlist").StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})}
	for i := 0; i < 20; i++ {
		if _, err := io.WriteString(ml, tcpOnlyLine+"\n"); err != nil {
			t.Fatal(err)
		}
		c.add(time.Second)
	}
	var warn, debug int
	for _, e := range logs.lines("Was able to connect to i-b over TCP") {
		switch e.level {
		case "warn":
			warn++
		case "debug":
			debug++
		}
	}
	if warn == 0 || debug == 0 || warn+debug != 20 || warn > 7 {
		t.Fatalf("memberlist's line logged %d times at warn and %d at debug, want a few at warn then debug", warn, debug)
	}
}

// gate stands in front of a node's gossip port at its advertised address and passes UDP
// and TCP on to the port, or not: what a security group open for one protocol only does.
// Packets are passed one way only, which is all memberlist needs: every answer goes to the
// address the asking node advertises.
type gate struct {
	addr string
	udp  *net.UDPConn
	tcp  net.Listener // nil: TCP connections are refused
	pass atomic.Bool  // UDP is passed on
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

// newGate listens at addr for UDP, and for TCP when tcp is set, in front of the node at to.
func newGate(t *testing.T, addr, to string, tcp, udp bool) *gate {
	t.Helper()
	g := &gate{addr: addr}
	g.pass.Store(udp)
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if g.udp, err = net.ListenUDP("udp", ua); err != nil {
		t.Fatal(err)
	}
	dst, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := g.udp.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if g.pass.Load() {
				_, _ = g.udp.WriteToUDP(buf[:n], dst)
			}
		}
	}()
	if tcp {
		if g.tcp, err = net.Listen("tcp", addr); err != nil {
			t.Fatal(err)
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				in, err := g.tcp.Accept()
				if err != nil {
					return
				}
				out, err := net.Dial("tcp", to)
				if err != nil {
					in.Close()
					continue
				}
				g.mu.Lock()
				g.conns = append(g.conns, in, out)
				g.mu.Unlock()
				g.wg.Add(2)
				go func() { defer g.wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
				go func() { defer g.wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
			}
		}()
	}
	t.Cleanup(func() {
		g.udp.Close()
		if g.tcp != nil {
			g.tcp.Close()
		}
		g.mu.Lock()
		for _, c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

// freePortOn returns a port free for TCP and UDP on ip.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatalf("no port free for TCP and UDP on %s", ip)
	return 0
}

// startLogged starts a Gossip that logs into a buffer, with the UDP threshold shortened.
func startLogged(t *testing.T, cfg Config) (*Gossip, *logBuffer) {
	t.Helper()
	logs, logger := newLogBuffer()
	g, err := New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	g.path.udpAfter = time.Second
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, logs
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
	}
}

// pathOf returns the path note g shows for the member called name, and whether it is alive.
func pathOf(g *Gossip, name string) (string, bool) {
	for _, m := range g.Members() {
		if m.Name == name {
			return m.Path, m.State == StateAlive
		}
	}
	return "", false
}

// TestGossip_HalfOpenPath runs two nodes on loopback addresses of their own, with a gate in
// front of b that passes only TCP, or only UDP.
func TestGossip_HalfOpenPath(t *testing.T) {
	const ipA, ipB, ipGate = "127.0.0.2", "127.0.0.3", "127.0.0.4"
	if l, err := net.Listen("tcp", ipGate+":0"); err != nil {
		t.Skipf("no 127.0.0.0/8 beyond 127.0.0.1 here: %v", err)
	} else {
		l.Close()
	}
	// b listens on its own address and advertises the gate's.
	nodes := func(t *testing.T) (ca, cb Config, gateAddr, bAddr string) {
		pa, pb, pg := freePortOn(t, ipA), freePortOn(t, ipB), freePortOn(t, ipGate)
		ca = testConfig(t, "i-a", pa)
		ca.BindAddr = ipA
		cb = testConfig(t, "i-b", pb)
		cb.BindAddr, cb.AdvertiseAddr, cb.AdvertisePort = ipB, ipGate, pg
		return ca, cb, net.JoinHostPort(ipGate, fmt.Sprint(pg)), net.JoinHostPort(ipB, fmt.Sprint(pb))
	}

	t.Run("UDPBlocked", func(t *testing.T) {
		ca, cb, gateAddr, bAddr := nodes(t)
		gt := newGate(t, gateAddr, bAddr, true, false)
		ca.Peers = []string{gateAddr}
		b, blogs := startLogged(t, cb)
		a, alogs := startLogged(t, ca)
		waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })

		// Both ends find out: a's probes of b, and b's of a, are answered over TCP only.
		want := "UDP to the gossip port is blocked (TCP works): open UDP"
		for _, x := range []struct {
			g    *Gossip
			peer string
		}{{a, "i-b"}, {b, "i-a"}} {
			waitFor(t, x.g.cfg.Name+" notes UDP blocked to "+x.peer, func() bool {
				p, _ := pathOf(x.g, x.peer)
				return strings.HasPrefix(p, want)
			})
		}
		e := waitEvent(t, a, "a's update about b's path", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventUpdate && e.Member.Path != "" })
		if !strings.HasPrefix(e.Member.Path, want) {
			t.Fatalf("b's path in a's update = %q", e.Member.Path)
		}
		if w := alogs.lines("UDP to the peer's gossip port is blocked"); len(w) != 1 || w[0].level != "warn" {
			t.Errorf("a's warnings = %+v, want one", w)
		}
		if w := blogs.lines("UDP to the peer's gossip port is blocked"); len(w) != 1 {
			t.Errorf("b's warnings = %+v, want one", w)
		}
		// memberlist's TCP fallback keeps b alive and counts as a sign of life.
		if _, alive := pathOf(a, "i-b"); !alive {
			t.Fatal("b is not alive for a")
		}
		if since := time.Since(a.LastContact("i-b")); since > 5*time.Second {
			t.Errorf("a last heard from b %v ago", since)
		}
		// A confirmation burst: no answer over UDP, port open, and not taken for a key mismatch.
		p, err := a.Confirm(context.Background(), "i-b", gateAddr)
		if err != nil || p.Answered || !p.Reachable || !p.UDPBlocked || p.KeyMismatch() || !p.Alive() {
			t.Fatalf("confirm across blocked UDP = %+v (key mismatch %v), %v; want reachable, UDP blocked, alive", p, p.KeyMismatch(), err)
		}

		// UDP opens: the note goes on both ends.
		gt.pass.Store(true)
		for _, x := range []struct {
			g    *Gossip
			peer string
		}{{a, "i-b"}, {b, "i-a"}} {
			waitFor(t, x.g.cfg.Name+" clears the note", func() bool {
				p, alive := pathOf(x.g, x.peer)
				return p == "" && alive
			})
		}
		if w := alogs.lines("UDP to the peer's gossip port works again"); len(w) != 1 {
			t.Errorf("a's all-clear lines = %+v, want one", w)
		}
		if n := len(alogs.lines("peer gone")) + len(alogs.lines("has failed")); n != 0 {
			t.Errorf("a suspected b %d times", n)
		}
	})

	t.Run("TCPBlockedMember", func(t *testing.T) {
		ca, cb, gateAddr, bAddr := nodes(t)
		newGate(t, gateAddr, bAddr, false, true)
		// a joins b at b's own address, then knows it by the gate's, which refuses TCP.
		ca.Peers = []string{bAddr}
		ca.RejoinInterval = time.Hour
		ca.PushPullInterval = 200 * time.Millisecond
		startLogged(t, cb)
		a, alogs := startLogged(t, ca)
		waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })
		waitFor(t, "a notes TCP blocked to b", func() bool {
			p, alive := pathOf(a, "i-b")
			return alive && strings.HasPrefix(p, "TCP to the gossip port is blocked (UDP works): open TCP")
		})
		if w := alogs.lines("TCP to the peer's gossip port is blocked"); len(w) != 1 || w[0].level != "warn" {
			t.Errorf("a's warnings = %+v, want one", w)
		}
		pp := a.PathProblems()
		if len(pp) != 1 || pp[0].Name != "i-b" || pp[0].Addr != gateAddr || pp[0].Blocked != "tcp" || pp[0].Joining {
			t.Fatalf("PathProblems = %+v", pp)
		}
		// memberlist's error for each failed push/pull goes to debug once that is said.
		waitFor(t, "a demotes memberlist's push/pull errors", func() bool {
			for _, e := range alogs.lines("Push/Pull with i-b failed") {
				if e.level == "debug" {
					return true
				}
			}
			return false
		})
	})

	t.Run("TCPBlockedFromStart", func(t *testing.T) {
		// a knows b only by the gate's address, which refuses TCP: memberlist's join
		// fails. The UDP ping a then sends to tell a blocked path from a dead peer carries
		// a's alive message piggybacked (so do the agent's confirmation pings), so b learns
		// of a and the two become members over UDP alone; until then, a cannot join b.
		// Either way a names the gate's address and says TCP to it is blocked.
		ca, cb, gateAddr, bAddr := nodes(t)
		newGate(t, gateAddr, bAddr, false, true)
		ca.Peers = []string{gateAddr}
		ca.PushPullInterval = 200 * time.Millisecond
		startLogged(t, cb)
		a, alogs := startLogged(t, ca)
		waitFor(t, "a notes TCP blocked to b", func() bool { return len(a.PathProblems()) == 1 })
		pp := a.PathProblems()
		if pp[0].Addr != gateAddr || pp[0].Blocked != "tcp" || !strings.Contains(pp[0].Note, "TCP to the gossip port is blocked (UDP works): open TCP") {
			t.Fatalf("PathProblems = %+v", pp)
		}
		path, alive := pathOf(a, "i-b")
		switch {
		case alive && path != pp[0].Note:
			t.Errorf("b is a member with path %q, want %q", path, pp[0].Note)
		case !alive && !pp[0].Joining:
			t.Errorf("b is no member, but the problem is not about joining: %+v", pp[0])
		}
		t.Logf("b alive to a: %v; note: %s", alive, pp[0].Note)
		if w := alogs.lines("gossip port is blocked, UDP gets through"); len(w) == 0 || w[0].level != "warn" {
			t.Errorf("a's warnings = %+v, want at least one", w)
		}
	})
}
