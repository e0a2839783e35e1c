package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/config"
)

// TestHooks_GracefulShutdown: two real agents (moto, memberlist) with a recording hook
// each. The owner's SIGTERM path (Close) hands the group over: the owner's on_release runs,
// with cause shutdown, before Close returns; the peer's on_acquire runs once, with the
// takeover's reason and timings.
func TestHooks_GracefulShutdown(t *testing.T) {
	c := agent.NewTestCluster(t, 200, 100)
	var dirs [2]string
	var runners [2]*agent.HookRunner
	for i := range runners {
		dirs[i] = t.TempDir()
		hook := filepath.Join(dirs[i], "hook.sh")
		body := "#!/bin/sh\nenv | grep '^NATGANKER_' | sort > \"$1/$NATGANKER_EVENT.$$.tmp\" && mv \"$1/$NATGANKER_EVENT.$$.tmp\" \"$1/$NATGANKER_EVENT.$$\"\n"
		if err := os.WriteFile(hook, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		argv := []string{hook, dirs[i]}
		runners[i] = agent.NewHookRunner(config.Hooks{OnAcquire: argv, OnRelease: argv, Timeout: 10 * time.Second}, c.InstanceID(i), nil, nil)
		t.Cleanup(func() { runners[i].Close() })
	}
	a0 := c.Start(0, nil, runners[0])
	a1 := c.Start(1, nil, runners[1])
	c.WaitMembers(a0, 2)
	c.WaitMembers(a1, 2)
	c.WaitOwner(0, 30*time.Second)

	// recorded returns the environments the hook in dir recorded for event.
	recorded := func(dir, event string) []string {
		files, _ := filepath.Glob(filepath.Join(dir, event+".*"))
		var out []string
		for _, f := range files {
			if strings.HasSuffix(f, ".tmp") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("nat1's acquire at start", func() bool { return len(recorded(dirs[0], "acquire")) == 1 })
	if env := recorded(dirs[0], "acquire")[0]; !strings.Contains(env, "NATGANKER_CAUSE=start") && !strings.Contains(env, "NATGANKER_CAUSE=takeover") {
		t.Errorf("nat1's first acquire:\n%s", env)
	}

	if err := a0.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the handover and then for the hooks it caused.
	rel := recorded(dirs[0], "release")
	if len(rel) != 1 {
		t.Fatalf("nat1 ran on_release %d times by the time Close returned, want once", len(rel))
	}
	for _, want := range []string{"NATGANKER_CAUSE=shutdown", "NATGANKER_FROM=" + c.InstanceID(0), "NATGANKER_TO=" + c.InstanceID(1), "NATGANKER_GROUP=egress"} {
		if !strings.Contains(rel[0], want) {
			t.Errorf("nat1's release lacks %s:\n%s", want, rel[0])
		}
	}
	c.WaitOwner(1, 30*time.Second)
	waitFor("nat2's acquire", func() bool { return len(recorded(dirs[1], "acquire")) >= 1 })
	acq := recorded(dirs[1], "acquire")
	if len(acq) != 1 {
		t.Fatalf("nat2 ran on_acquire %d times, want once", len(acq))
	}
	for _, want := range []string{"NATGANKER_CAUSE=takeover", "NATGANKER_REASON=owner " + c.InstanceID(0) + " is shutting down",
		"NATGANKER_FROM=" + c.InstanceID(0), "NATGANKER_VERIFIED_MS="} {
		if !strings.Contains(acq[0], want) {
			t.Errorf("nat2's acquire lacks %s:\n%s", want, acq[0])
		}
	}
}
