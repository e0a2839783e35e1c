package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
	"github.com/natganker/natganker/sdnotify"
)

// notifySocket is a unixgram socket the test owns, standing for systemd's notify socket.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
	path string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	// A short directory: a unix socket path is at most 108 bytes.
	dir, err := os.MkdirTemp("", "ngsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{t: t, conn: c, path: path}
}

// notifier returns what the agent is given under systemd with WatchdogSec=watchdog.
func (s *notifySocket) notifier(watchdog time.Duration) *sdnotify.Notifier {
	s.t.Helper()
	env := map[string]string{sdnotify.EnvSocket: s.path}
	if watchdog > 0 {
		env[sdnotify.EnvWatchdogUSec] = strconv.FormatInt(int64(watchdog/time.Microsecond), 10)
	}
	n, err := sdnotify.New(func(k string) string { return env[k] }, os.Getpid())
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

// next returns the next message, or "" when none comes within d.
func (s *notifySocket) next(d time.Duration) string {
	s.t.Helper()
	if err := s.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		s.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := s.conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return string(buf[:n])
}

// waitFor reads messages until one contains want (10 s at most) and returns it.
func (s *notifySocket) waitFor(want string) string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var seen []string
	for time.Now().Before(deadline) {
		m := s.next(time.Until(deadline))
		if strings.Contains(m, want) {
			return m
		}
		if m != "" && m != sdnotify.Watchdog {
			seen = append(seen, m)
		}
	}
	s.t.Fatalf("no notification with %q; got %q", want, seen)
	return ""
}

// drain discards the messages already queued.
func (s *notifySocket) drain() {
	for s.next(time.Millisecond) != "" {
	}
}

// TestSupervise_NotifyProtocol: READY=1 with the status once the first read of EC2 is in,
// STATUS= when what the node owns changes, WATCHDOG=1 pings, STOPPING=1 on Close.
func TestSupervise_NotifyProtocol(t *testing.T) {
	noLeak(t)
	sock := newNotifySocket(t)
	cloud := &gatedCloud{fakeCloud: newFakeCloud("i-b", "rtb-1"), gate: make(chan struct{})}
	l := startLoopWith(t, "i-a", loopConfig(200, 50*time.Millisecond), cloud.fakeCloud, func(d *Deps) {
		d.Cloud = cloud
		d.Supervisor = sock.notifier(200 * time.Millisecond)
	})
	// Not ready while the first read of EC2 is still out (the watchdog pings meanwhile).
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		if m := sock.next(time.Until(deadline)); strings.Contains(m, sdnotify.Ready) {
			t.Fatalf("ready before EC2 was read: %q", m)
		}
	}
	close(cloud.gate)
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	ready := sock.waitFor(sdnotify.Ready)
	if !strings.Contains(ready, "STATUS=") {
		t.Errorf("READY=1 without a status: %q", ready)
	}
	// nat a outranks the owner: it takes the group after the failback delay.
	st := sock.waitFor("STATUS=owns egress")
	if !strings.Contains(st, "peers alive: 1") {
		t.Errorf("status = %q, want the live peer counted", st)
	}
	sock.drain()
	if m := sock.waitFor(sdnotify.Watchdog); m != sdnotify.Watchdog {
		t.Errorf("watchdog ping = %q", m)
	}
	// The peer takes over on Close; STOPPING=1 comes first.
	go func() {
		waitFor(t, "the leaving announcement", func() bool {
			var out bool
			l.gossip.set(func(g *fakeGossip) {
				for _, m := range g.published {
					out = out || m.Leaving
				}
			})
			return out
		})
		cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	sock.waitFor(sdnotify.Stopping)
}

// gatedCloud is a fakeCloud whose reads wait until gate is closed.
type gatedCloud struct {
	*fakeCloud
	gate chan struct{}
}

func (c *gatedCloud) Observe(ctx context.Context, g ec2.Group, self ec2.Self) (ec2.Observation, error) {
	select {
	case <-c.gate:
	case <-ctx.Done():
		return ec2.Observation{}, ctx.Err()
	}
	return c.fakeCloud.Observe(ctx, g, self)
}

// TestSupervise_WedgedLoopStopsPings: the watchdog pings come from the run loop itself, so a
// loop stuck in a handler sends none, and they resume when it is free again.
func TestSupervise_WedgedLoopStopsPings(t *testing.T) {
	noLeak(t)
	sock := newNotifySocket(t)
	const watchdog = 100 * time.Millisecond // pings every 50ms
	l := startLoopWith(t, "i-a", loopConfig(200, time.Hour), newFakeCloud("i-a", "rtb-1"), func(d *Deps) { d.Supervisor = sock.notifier(watchdog) })
	for i := 0; i < 3; i++ {
		sock.waitFor(sdnotify.Watchdog)
	}

	entered, release := make(chan struct{}), make(chan struct{})
	wedged := make(chan error, 1)
	go func() { wedged <- l.do(context.Background(), func() { close(entered); <-release }) }()
	<-entered
	// Whatever was sent before the loop wedged is queued already: a unixgram send lands in
	// the receiver's buffer before it returns.
	sock.drain()
	if m := sock.next(5 * watchdog); m != "" {
		t.Errorf("a wedged loop sent %q within %v (the watchdog timeout is %v)", m, 5*watchdog, watchdog)
	}
	close(release)
	if err := <-wedged; err != nil {
		t.Fatal(err)
	}
	sock.waitFor(sdnotify.Watchdog)
}

// TestSupervise_NoServiceManager: without $NOTIFY_SOCKET nothing is sent and nothing fails.
func TestSupervise_NoServiceManager(t *testing.T) {
	noLeak(t)
	n, err := sdnotify.New(func(string) string { return "" }, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	l := startLoopWith(t, "i-a", loopConfig(200, time.Hour), newFakeCloud("i-a", "rtb-1"), func(d *Deps) { d.Supervisor = n })
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	if l.logged("could not notify") {
		t.Errorf("complained without a service manager:\n%s", l.log.String())
	}
}
