package lab_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/lab"
)

func TestMain(m *testing.M) {
	// The lab runs this test binary inside the client and inet namespaces as its traffic
	// helpers.
	if lab.IsHelper() {
		os.Exit(lab.RunHelper())
	}
	os.Exit(m.Run())
}

// requireLab skips the test when this machine cannot run the lab: not root, or no network
// namespaces.
func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("lab test needs root to create network namespaces; run `make test` as root")
	}
	probe := lab.Prefix + "nscheck"
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("lab test needs network namespaces: ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
}

// buildAgent compiles natganker-agent into a temporary directory.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "natganker-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/natganker/natganker/cmd/natganker-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build natganker-agent: %v\n%s", err, out)
	}
	return bin
}

func TestLab_Failover(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	tl := lab.NewTimeline(nil, time.Now())
	l := lab.New(lab.Options{
		Dir:           t.TempDir(),
		AgentBin:      agentBin,
		FailbackDelay: 3 * time.Second,
		Timeline:      tl,
		Logger:        hclog.New(&hclog.LoggerOptions{Name: "lab", Level: hclog.Warn, Output: testWriter{t}}),
	})
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			tl.Print(&b, time.Time{}, time.Time{})
			t.Logf("lab timeline:\n%s", b.String())
			for _, h := range []string{lab.Nat1, lab.Nat2} {
				if log, err := os.ReadFile(filepath.Join(l.Dir(), "agent-"+h+".log")); err == nil {
					t.Logf("agent %s log (tail):\n%s", h, tail(string(log), 40))
				}
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("tear down lab: %v", err)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), lab.Prefix) {
			t.Errorf("namespaces left after Close:\n%s", out)
		}
	})
	if err := l.Up(ctx); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if err := l.StartMechanism(ctx, lab.Natganker, time.Minute); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	if _, err := l.WaitOwner(ctx, lab.Nat1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	tr, err := l.StartTraffic(ctx)
	if err != nil {
		t.Fatalf("client traffic through nat1: %v", err)
	}
	w := l.World()

	// assertOwner checks what a user would check in EC2 and on the wire.
	assertOwner := func(t *testing.T, host string) {
		t.Helper()
		s, err := l.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := w.Instances[host].ID
		if s.EIPHolder != want {
			t.Errorf("EIP %s on %q in EC2, want %s (%s)", w.AllocationID, s.EIPHolder, host, want)
		}
		for _, rt := range w.Tables() {
			if s.Routes[rt] != want {
				t.Errorf("route table %s: 0.0.0.0/0 → %q in EC2, want %s (%s)", rt, s.Routes[rt], host, want)
			}
		}
		out, err := exec.Command("ip", "-n", lab.NS(lab.Client), "route", "show", "default").Output()
		if err != nil || !strings.Contains(string(out), "via "+w.Instances[host].PrivateIP) {
			t.Errorf("client default route %q (%v), want via %s", strings.TrimSpace(string(out)), err, w.Instances[host].PrivateIP)
		}
		// The reply must have come back through host: it holds the EIP, and the other NAT's
		// conntrack has not seen the client's latest probes.
		if err := tr.WaitReplyAfter(ctx, time.Now(), 10*time.Second); err != nil {
			t.Errorf("client traffic through %s: %v", host, err)
		}
		out, err = exec.Command("ip", "netns", "exec", lab.NS(host), "nft", "list", "table", "ip", "natganker").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "masquerade") {
			t.Errorf("masquerade on %s: %v\n%s", host, err, out)
		}
	}

	t.Run("HardKill", func(t *testing.T) {
		f, err := l.HardKill(ctx, tr, lab.Nat1, lab.Natganker, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("hard kill of nat1: client outage %.3fs, decided %.3fs, EC2 converged %.3fs after the kill, TCP survived %v",
			f.Outage.Duration().Seconds(), f.Detection().Seconds(), f.Converged().Seconds(), f.TCPSurvived)
		if f.Takeover == nil {
			t.Errorf("nat2 logged no takeover line")
		}
		assertOwner(t, lab.Nat2)
	})
	if t.Failed() {
		return
	}

	t.Run("Failback", func(t *testing.T) {
		if err := l.ReviveHost(ctx, lab.Nat1); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitOwner(ctx, lab.Nat1, time.Minute); err != nil {
			t.Fatal(err)
		}
		assertOwner(t, lab.Nat1)
	})
	if t.Failed() {
		return
	}

	t.Run("BrokenDatapath", func(t *testing.T) {
		if err := l.WaitReady(ctx, lab.Natganker, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		// nat2 must have seen the failback in EC2 before nat1 breaks; until then it still
		// believes it owns the group itself.
		waitEC2Owner(ctx, t, l, lab.Nat2, w.Instances[lab.Nat1].ID, 30*time.Second)
		if out, err := exec.Command("ip", "netns", "exec", lab.NS(lab.Nat1), "nft", "delete", "table", "ip", "natganker").CombinedOutput(); err != nil {
			t.Fatalf("delete masquerade on nat1: %v\n%s", err, out)
		}
		broke := time.Now()
		at, err := l.WaitOwner(ctx, lab.Nat2, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nat1 handed over %.3fs after its masquerade table was deleted", at.Sub(broke).Seconds())
		assertOwner(t, lab.Nat2)
	})
}

// waitEC2Owner waits until the agent on host reports owner as the group's owner in EC2.
func waitEC2Owner(ctx context.Context, t *testing.T, l *lab.Lab, host, owner string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := l.Status(ctx, host)
		if err == nil && len(st.Groups) > 0 && st.Groups[0].EC2Owner == owner {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not see %s as the owner in EC2 after %s: %+v, %v", host, owner, timeout, st.Groups, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
