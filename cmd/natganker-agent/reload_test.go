package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natganker/natganker/ec2/ec2test"
	"github.com/natganker/natganker/sdnotify"
)

// TestRun_SystemdNotifyAndReload runs the agent as systemd would (Type=notify, WatchdogSec)
// against moto, with a notify socket the test owns: READY=1 once up, watchdog pings, on
// SIGHUP RELOADING=1, the new priority applied and a changed gossip port refused by name,
// then READY=1, and STOPPING=1 on SIGTERM.
func TestRun_SystemdNotifyAndReload(t *testing.T) {
	moto := ec2test.StartMoto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	world, err := ec2test.Seed(ctx, moto.Endpoint, ec2test.WorldSpec{
		Instances:   []ec2test.InstanceSpec{{Name: "nat-a"}},
		RouteTables: []ec2test.RouteTableSpec{{Name: "private-a", DefaultTo: -1}},
		EIPOwner:    -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ngsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sockPath := filepath.Join(dir, "notify")
	notifyConn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notifyConn.Close()
	env := map[string]string{sdnotify.EnvSocket: sockPath, sdnotify.EnvWatchdogUSec: "400000"}
	sd, err := sdnotify.New(func(k string) string { return env[k] }, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// next waits for a notification containing want.
	var seen []string
	next := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		buf := make([]byte, 4096)
		for time.Now().Before(deadline) {
			_ = notifyConn.SetReadDeadline(deadline)
			n, err := notifyConn.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			m := string(buf[:n])
			if m != sdnotify.Watchdog {
				seen = append(seen, m)
			}
			if strings.Contains(m, want) {
				return m
			}
		}
		t.Fatalf("no notification with %q; got %q", want, seen)
		return ""
	}

	port := freePort(t)
	sock := filepath.Join(dir, "agent.sock")
	text := motoConfig(world, moto.Endpoint, port, sock, world.RouteTableIDs[0])
	cfg := writeFile(t, "agent.hcl", text)
	logs := &syncBuffer{}
	sigc, hup := make(chan os.Signal, 2), make(chan os.Signal, 1)
	cmd := &RunCommand{stdout: &bytes.Buffer{}, stderr: logs, signals: sigc, hup: hup, sd: sd,
		exit: func(code int) { t.Errorf("exit(%d) called after a single signal", code) }}
	done := make(chan error, 1)
	go func() { done <- cmd.Run(context.Background(), []string{"-config", cfg}) }()
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()

	if m := next(sdnotify.Ready); !strings.Contains(m, "STATUS=") {
		t.Errorf("READY=1 without a status: %q", m)
	}
	next("STATUS=owns egress")
	next(sdnotify.Watchdog)

	// The priority changes, and so does the gossip port, which only a restart applies.
	changed := strings.Replace(text, "priority              = 200", "priority              = 250", 1)
	changed = strings.Replace(changed, "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(port+1), 1)
	if changed == text {
		t.Fatal("the test's edit of the config did not apply")
	}
	if err := os.WriteFile(cfg, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	next(sdnotify.Reloading + "\nMONOTONIC_USEC=")
	next(sdnotify.Ready)
	waitFor(t, 10*time.Second, "the reload log lines", func() bool {
		return strings.Contains(logs.String(), `group \"egress\".priority: 200 → 250`) &&
			strings.Contains(logs.String(), `only a restart applies them`) && strings.Contains(logs.String(), `gossip.bind`)
	})

	// An invalid file changes nothing and the agent runs on.
	if err := os.WriteFile(cfg, []byte("group {"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	next(sdnotify.Ready)
	waitFor(t, 10*time.Second, "the refusal", func() bool { return strings.Contains(logs.String(), "reload refused: the configuration is invalid") })

	sigc <- syscall.SIGTERM
	next(sdnotify.Stopping)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after SIGTERM")
	}
}
