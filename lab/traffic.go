package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HelperEnv names the environment variable that turns the lab binary (or a test binary)
// into one of its in-namespace helpers: "probe" or "serve".
const HelperEnv = "NATGANKER_LAB_HELPER"

// ProbeInterval is the spacing of the client's UDP probes.
const ProbeInterval = 10 * time.Millisecond

// tcpInterval is the spacing of writes on the long-lived TCP connection.
const tcpInterval = 100 * time.Millisecond

// The server-side streams: connections on which only inet writes, the kind a NAT that takes
// over without the flow's connection-tracking entry answers with a reset.
const (
	// pushBytes every pushInterval: a server push, a long poll's answers.
	pushBytes, pushInterval = 512, 20 * time.Millisecond
	// downloadBytes every downloadInterval: a bulk download at 1 MB/s.
	downloadBytes, downloadInterval = 16 << 10, 16 * time.Millisecond
	// streamReport is the least spacing of the prober's lines about a stream's data.
	streamReport = 50 * time.Millisecond
)

// Streams are the kinds of server-side stream the prober keeps open, besides the echo.
var Streams = []string{"push", "download"}

// RunHelper runs the helper named by HelperEnv and returns the process exit code. A main
// function calls it first: `if lab.IsHelper() { os.Exit(lab.RunHelper()) }`.
func RunHelper() int {
	var err error
	switch os.Getenv(HelperEnv) {
	case "probe":
		err = probe(os.Stdout)
	case "serve":
		err = serve()
	default:
		err = fmt.Errorf("unknown helper %q", os.Getenv(HelperEnv))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	return 0
}

// IsHelper reports whether this process was started as an in-namespace helper.
func IsHelper() bool { return os.Getenv(HelperEnv) != "" }

// serve runs inside inet: a UDP echo and a TCP echo service, the server side of the push
// and download streams, and a UDP service that answers with the source address it saw
// (WhoamiPort). ICMP is the kernel's.
func serve() error {
	uc, err := net.ListenPacket("udp", net.JoinHostPort(InetIP, strconv.Itoa(UDPEchoPort)))
	if err != nil {
		return fmt.Errorf("listen udp: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(InetIP, strconv.Itoa(TCPEchoPort)))
	if err != nil {
		return fmt.Errorf("listen tcp: %w", err)
	}
	for _, s := range []struct {
		port  int
		bytes int
		every time.Duration
	}{{PushPort, pushBytes, pushInterval}, {DownloadPort, downloadBytes, downloadInterval}} {
		sl, err := net.Listen("tcp", net.JoinHostPort(InetIP, strconv.Itoa(s.port)))
		if err != nil {
			return fmt.Errorf("listen tcp: %w", err)
		}
		go acceptLoop(sl, func(c net.Conn) { writeEvery(c, s.bytes, s.every) })
	}
	wc, err := net.ListenPacket("udp", net.JoinHostPort(InetIP, strconv.Itoa(WhoamiPort)))
	if err != nil {
		return fmt.Errorf("listen udp: %w", err)
	}
	go func() {
		buf := make([]byte, 64)
		for {
			_, addr, err := wc.ReadFrom(buf)
			if err != nil {
				return
			}
			if ua, ok := addr.(*net.UDPAddr); ok {
				_, _ = wc.WriteTo([]byte(ua.IP.String()), addr)
			}
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = uc.WriteTo(buf[:n], addr)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// acceptLoop hands every connection ln accepts to handle, in a goroutine of its own.
func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// writeEvery writes n bytes to c every interval until a write fails; it never reads.
func writeEvery(c net.Conn, n int, every time.Duration) {
	buf := make([]byte, n)
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// probe runs inside client. It sends a numbered UDP probe every ProbeInterval and writes
// one line per reply ("u seq sent_ns recv_ns"), and keeps one TCP connection sending a few
// bytes every tcpInterval ("t recv_ns" per echo, "tc ns" on connect, "te ns error" when the
// connection breaks, after which it reconnects).
func probe(out io.Writer) error {
	var mu sync.Mutex
	w := bufio.NewWriter(out)
	emit := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, format+"\n", args...)
		_ = w.Flush()
	}
	uc, err := net.Dial("udp", net.JoinHostPort(InetIP, strconv.Itoa(UDPEchoPort)))
	if err != nil {
		return fmt.Errorf("dial udp: %w", err)
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := uc.Read(buf)
			now := time.Now().UnixNano()
			if err != nil {
				// A refused probe (ICMP error) is not a reply; keep reading.
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if n < 16 {
				continue
			}
			emit("u %d %d %d", binary.BigEndian.Uint64(buf[0:8]), int64(binary.BigEndian.Uint64(buf[8:16])), now)
		}
	}()
	go tcpLoop(emit)
	go streamLoop(emit, "push", PushPort)
	go streamLoop(emit, "download", DownloadPort)
	t := time.NewTicker(ProbeInterval)
	defer t.Stop()
	var seq uint64
	pkt := make([]byte, 16)
	for range t.C {
		seq++
		binary.BigEndian.PutUint64(pkt[0:8], seq)
		binary.BigEndian.PutUint64(pkt[8:16], uint64(time.Now().UnixNano()))
		_, _ = uc.Write(pkt)
	}
	return nil
}

func tcpLoop(emit func(string, ...any)) {
	addr := net.JoinHostPort(InetIP, strconv.Itoa(TCPEchoPort))
	for {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		emit("tc %d", time.Now().UnixNano())
		errc := make(chan error, 2)
		go func() {
			buf := make([]byte, 8)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					errc <- err
					return
				}
				emit("t %d", time.Now().UnixNano())
			}
		}()
		go func() {
			t := time.NewTicker(tcpInterval)
			defer t.Stop()
			for range t.C {
				if _, err := c.Write([]byte("natgankr")); err != nil {
					errc <- err
					return
				}
			}
		}()
		err = <-errc
		emit("te %d %s", time.Now().UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
}

// streamLoop keeps one connection to inet's stream service on port open, only reading:
// "sc kind ns" on connect, "s kind ns" when data came (at most every streamReport), "se kind
// ns error" when the connection breaks, after which it reconnects.
func streamLoop(emit func(string, ...any), kind string, port int) {
	addr := net.JoinHostPort(InetIP, strconv.Itoa(port))
	buf := make([]byte, 64<<10)
	for {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		emit("sc %s %d", kind, time.Now().UnixNano())
		var last time.Time
		for {
			if _, err = c.Read(buf); err != nil {
				break
			}
			if now := time.Now(); now.Sub(last) >= streamReport {
				emit("s %s %d", kind, now.UnixNano())
				last = now
			}
		}
		emit("se %s %d %s", kind, time.Now().UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
}

// Traffic is what the client's prober has seen, collected from its output.
type Traffic struct {
	mu       sync.Mutex
	udp      []udpReply // in receive order
	tcpEcho  []time.Time
	tcpErrs  []time.Time
	tcpConns []time.Time
	streams  map[string]*streamLog
}

// streamLog is what the prober saw of one kind of stream.
type streamLog struct {
	conns, data, errs []time.Time
}

func (tr *Traffic) stream(kind string) *streamLog {
	if tr.streams == nil {
		tr.streams = map[string]*streamLog{}
	}
	s := tr.streams[kind]
	if s == nil {
		s = &streamLog{}
		tr.streams[kind] = s
	}
	return s
}

type udpReply struct {
	seq        uint64
	sent, recv time.Time
}

// consume parses prober output until r ends; onBreak hears of every broken connection
// ("TCP echo", "push stream", "download stream").
func (tr *Traffic) consume(r io.Reader, onBreak func(at time.Time, what, msg string)) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		ns := func(s string) time.Time { n, _ := strconv.ParseInt(s, 10, 64); return time.Unix(0, n) }
		tr.mu.Lock()
		switch f[0] {
		case "u":
			if len(f) == 4 {
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				tr.udp = append(tr.udp, udpReply{seq: seq, sent: ns(f[2]), recv: ns(f[3])})
			}
		case "t":
			tr.tcpEcho = append(tr.tcpEcho, ns(f[1]))
		case "tc":
			tr.tcpConns = append(tr.tcpConns, ns(f[1]))
		case "sc", "s", "se":
			if len(f) >= 3 {
				st := tr.stream(f[1])
				at := ns(f[2])
				switch f[0] {
				case "sc":
					st.conns = append(st.conns, at)
				case "s":
					st.data = append(st.data, at)
				case "se":
					st.errs = append(st.errs, at)
					if onBreak != nil {
						tr.mu.Unlock()
						onBreak(at, f[1]+" stream", strings.Join(f[3:], " "))
						continue
					}
				}
			}
		case "te":
			at := ns(f[1])
			tr.tcpErrs = append(tr.tcpErrs, at)
			if onBreak != nil {
				tr.mu.Unlock()
				onBreak(at, "TCP echo", strings.Join(f[2:], " "))
				continue
			}
		}
		tr.mu.Unlock()
	}
}

// Outage is the client's view of one failure: the last UDP reply to a probe sent before
// the kill and the first reply to a probe sent after it.
type Outage struct {
	LastBefore, FirstAfter time.Time
	Lost                   int // probes sent after LastBefore's probe that never got a reply
}

// Duration is the gap the client saw.
func (o Outage) Duration() time.Duration { return o.FirstAfter.Sub(o.LastBefore) }

// OutageAfter measures the outage that followed kill, or reports false when no reply to a
// probe sent after kill has arrived yet.
func (tr *Traffic) OutageAfter(kill time.Time) (Outage, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var o Outage
	var lastSeq, firstSeq uint64
	for _, r := range tr.udp {
		if r.sent.Before(kill) {
			if r.recv.After(o.LastBefore) {
				o.LastBefore, lastSeq = r.recv, r.seq
			}
			continue
		}
		if o.FirstAfter.IsZero() || r.recv.Before(o.FirstAfter) {
			o.FirstAfter, firstSeq = r.recv, r.seq
		}
	}
	if o.FirstAfter.IsZero() || o.LastBefore.IsZero() {
		return o, false
	}
	if firstSeq > lastSeq {
		o.Lost = int(firstSeq - lastSeq - 1)
	}
	return o, true
}

// ReplyAfter reports whether a UDP reply to a probe sent after t has arrived.
func (tr *Traffic) ReplyAfter(t time.Time) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i := len(tr.udp) - 1; i >= 0; i-- {
		if tr.udp[i].sent.After(t) {
			return true
		}
		if tr.udp[i].recv.Before(t) {
			break
		}
	}
	return false
}

// TCPSurvived reports whether the long TCP connection lived through [from, to] without
// breaking and echoed something after recovered.
func (tr *Traffic) TCPSurvived(from, recovered, to time.Time) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, e := range tr.tcpErrs {
		if !e.Before(from) && !e.After(to) {
			return false
		}
	}
	i := sort.Search(len(tr.tcpEcho), func(i int) bool { return tr.tcpEcho[i].After(recovered) })
	return i < len(tr.tcpEcho) && !tr.tcpEcho[i].After(to)
}

// StreamSurvived reports whether the stream of kind lived through [from, to] without
// breaking and brought data after recovered.
func (tr *Traffic) StreamSurvived(kind string, from, recovered, to time.Time) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	st := tr.stream(kind)
	for _, e := range st.errs {
		if !e.Before(from) && !e.After(to) {
			return false
		}
	}
	i := sort.Search(len(st.data), func(i int) bool { return st.data[i].After(recovered) })
	return i < len(st.data) && !st.data[i].After(to)
}

// StreamErrorsBetween counts breaks of the stream of kind in [from, to].
func (tr *Traffic) StreamErrorsBetween(kind string, from, to time.Time) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, e := range tr.stream(kind).errs {
		if !e.Before(from) && !e.After(to) {
			n++
		}
	}
	return n
}

// TCPErrorsBetween counts connection breaks in [from, to].
func (tr *Traffic) TCPErrorsBetween(from, to time.Time) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, e := range tr.tcpErrs {
		if !e.Before(from) && !e.After(to) {
			n++
		}
	}
	return n
}

// waitReply polls until a UDP reply to a probe sent after t arrives.
func (tr *Traffic) waitReply(ctx context.Context, t time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !tr.ReplyAfter(t) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no reply from %s within %s", InetIP, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(ProbeInterval):
		}
	}
	return nil
}

// WaitReplyAfter waits until a UDP reply to a probe sent after t arrives.
func (tr *Traffic) WaitReplyAfter(ctx context.Context, t time.Time, timeout time.Duration) error {
	return tr.waitReply(ctx, t, timeout)
}

// LongestGap is the longest time between consecutive UDP replies received in [from, to],
// counting from the last reply before from.
func (tr *Traffic) LongestGap(from, to time.Time) time.Duration {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var prev time.Time
	var gap time.Duration
	for _, r := range tr.udp {
		if r.recv.Before(from) {
			prev = r.recv
			continue
		}
		if r.recv.After(to) {
			break
		}
		if !prev.IsZero() && r.recv.Sub(prev) > gap {
			gap = r.recv.Sub(prev)
		}
		prev = r.recv
	}
	// Silence up to the end of the window is a gap too.
	if !prev.IsZero() && to.Sub(prev) > gap {
		gap = to.Sub(prev)
	}
	return gap
}

// Gaps returns every stretch of at least min between consecutive UDP replies received in
// [from, to], counting from the last reply before from and up to to.
func (tr *Traffic) Gaps(from, to time.Time, min time.Duration) []Gap {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []Gap
	var prev time.Time
	for _, r := range tr.udp {
		if r.recv.Before(from) {
			prev = r.recv
			continue
		}
		if r.recv.After(to) {
			break
		}
		if !prev.IsZero() && r.recv.Sub(prev) >= min {
			out = append(out, Gap{From: prev, To: r.recv})
		}
		prev = r.recv
	}
	if prev.IsZero() {
		prev = from
	}
	if to.Sub(prev) >= min {
		out = append(out, Gap{From: prev, To: to})
	}
	return out
}
