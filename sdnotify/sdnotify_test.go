package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket the test owns, as systemd's notify socket.
func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestNotifier_Messages(t *testing.T) {
	c, path := listen(t)
	n, err := New(env(map[string]string{EnvSocket: path, EnvWatchdogUSec: "10000000"}), 42)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Enabled() || n.WatchdogTimeout() != 10*time.Second || n.WatchdogInterval() != 5*time.Second {
		t.Fatalf("enabled %v, watchdog %v every %v; want 10s every 5s", n.Enabled(), n.WatchdogTimeout(), n.WatchdogInterval())
	}
	for _, msg := range []string{Ready + "\n" + Status("owns egress"), Watchdog, Status("owns\nnothing  now"), Stopping} {
		if err := n.Notify(msg); err != nil {
			t.Fatal(err)
		}
		got := read(t, c)
		want := strings.ReplaceAll(msg, "owns\nnothing  now", "owns nothing now")
		if got != want {
			t.Errorf("received %q, want %q", got, want)
		}
	}
	if err := n.Notify(ReloadingNow()); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("reloading = %q", got)
	}
}

func TestNotifier_AbstractSocket(t *testing.T) {
	name := "@natganker-test-" + filepath.Base(t.TempDir())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Skipf("abstract unix sockets unavailable: %v", err)
	}
	defer c.Close()
	n, err := New(env(map[string]string{EnvSocket: name}), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(Ready); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != Ready {
		t.Errorf("received %q", got)
	}
}

func TestNew_Environment(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		enabled  bool
		watchdog time.Duration
		wantErr  string
	}{
		{name: "NoServiceManager", env: map[string]string{}},
		{name: "NoWatchdog", env: map[string]string{EnvSocket: "/run/systemd/notify"}, enabled: true},
		{name: "Watchdog", env: map[string]string{EnvSocket: "/run/systemd/notify", EnvWatchdogUSec: "10000000"}, enabled: true, watchdog: 10 * time.Second},
		{name: "WatchdogThisPID", env: map[string]string{EnvSocket: "/run/systemd/notify", EnvWatchdogUSec: "4000000", EnvWatchdogPID: "42"}, enabled: true, watchdog: 4 * time.Second},
		{name: "WatchdogOtherPID", env: map[string]string{EnvSocket: "/run/systemd/notify", EnvWatchdogUSec: "4000000", EnvWatchdogPID: "7"}, enabled: true},
		{name: "WatchdogGarbage", env: map[string]string{EnvSocket: "/run/systemd/notify", EnvWatchdogUSec: "10s"}, enabled: true, wantErr: "WATCHDOG_USEC"},
		{name: "WatchdogZero", env: map[string]string{EnvSocket: "/run/systemd/notify", EnvWatchdogUSec: "0"}, enabled: true, wantErr: "WATCHDOG_USEC"},
		{name: "RelativeSocket", env: map[string]string{EnvSocket: "notify"}, wantErr: "NOTIFY_SOCKET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(env(tt.env), 42)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if n.Enabled() != tt.enabled || n.WatchdogTimeout() != tt.watchdog {
				t.Errorf("enabled %v watchdog %v, want %v %v", n.Enabled(), n.WatchdogTimeout(), tt.enabled, tt.watchdog)
			}
			if !tt.enabled {
				if err := n.Notify(Ready); err != nil {
					t.Errorf("notify without a service manager: %v", err)
				}
			}
		})
	}
}

func TestNotifier_SocketGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone.sock")
	n, err := New(env(map[string]string{EnvSocket: path}), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(Ready); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want one naming %s", err, path)
	}
}

// TestNotifier_NeverBlocks: a service manager that stops reading must not stall the sender.
func TestNotifier_NeverBlocks(t *testing.T) {
	_, path := listen(t) // never read
	n, err := New(env(map[string]string{EnvSocket: path}), 1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 10000 && err == nil; i++ {
			err = n.Notify(Watchdog)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("10000 datagrams to a socket nobody reads all went through")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Notify blocked on a full socket")
	}
}
