package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/agent/control"
	"github.com/natganker/natganker/agent/telemetry"
	"github.com/natganker/natganker/ec2/ec2test"
)

// TestRun_MetricsAndHooks runs the agent as `run` does, with telemetry and hooks configured,
// against moto: an operator's takeover shows in /metrics and runs on_acquire with its
// timings; SIGTERM stops the endpoint. A taken metrics address stops the start-up with an
// error naming the setting, before the agent joins anyone.
func TestRun_MetricsAndHooks(t *testing.T) {
	moto := ec2test.StartMoto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	world, err := ec2test.Seed(ctx, moto.Endpoint, ec2test.WorldSpec{
		Instances:   []ec2test.InstanceSpec{{Name: "nat-a"}, {Name: "nat-b"}},
		RouteTables: []ec2test.RouteTableSpec{{Name: "private-a", DefaultTo: 1}},
		EIPOwner:    1,
	})
	if err != nil {
		t.Fatal(err)
	}
	self, rtb := world.Instances[0].ID, world.RouteTableIDs[0]
	dir, err := os.MkdirTemp("", "ngwatch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")

	t.Run("TakeoverScrapedAndHooked", func(t *testing.T) {
		calls := t.TempDir()
		hook := filepath.Join(calls, "hook.sh")
		if err := os.WriteFile(hook, []byte("#!/bin/sh\nenv | grep '^NATGANKER_' | sort > \"$1/$NATGANKER_EVENT.$$.tmp\" && mv \"$1/$NATGANKER_EVENT.$$.tmp\" \"$1/$NATGANKER_EVENT.$$\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cfg := writeFile(t, "agent.hcl", motoConfig(world, moto.Endpoint, freePort(t), sock, rtb)+fmt.Sprintf(`
telemetry {
  prometheus_listen = %q
}
hooks {
  on_acquire = [%q, %q]
  timeout    = "10s"
}
`, listen, hook, calls))
		ra := startRun(t, cfg)
		url := "http://" + listen + "/metrics"
		client := control.NewClient(sock)
		waitFor(t, 20*time.Second, "the agent to read EC2", func() bool {
			st, err := client.Status(context.Background())
			return err == nil && len(st.Groups) == 1 && !st.Groups[0].ObservedAt.IsZero()
		})
		s, err := telemetry.Get(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sum("natganker_group_owned", `group="egress"`) != 0 || s.Sum("natganker_build_info", `version="`+version+`"`) != 1 {
			t.Errorf("before the takeover:\n%s", s.Show("natganker_group_owned", "natganker_build_info"))
		}

		if r := run(t, "takeover", "-group", "egress", "-socket", sock); r.code != 0 {
			t.Fatalf("takeover: code %d, stderr %q", r.code, r.stderr)
		}
		waitFor(t, 20*time.Second, "the takeover in /metrics", func() bool {
			s, err = telemetry.Get(context.Background(), url)
			return err == nil && s.Sum("natganker_group_owned", `group="egress"`) == 1 &&
				s.Sum("natganker_takeovers_total", `reason="operator"`) == 1
		})
		if s.Sum("natganker_ec2_requests_total", `action="AssociateAddress"`, `result="ok"`) < 1 {
			t.Errorf("no AssociateAddress counted:\n%s", s.Show("natganker_ec2_requests_total"))
		}
		var env string
		waitFor(t, 20*time.Second, "the on_acquire hook", func() bool {
			files, _ := filepath.Glob(filepath.Join(calls, "acquire.*"))
			for _, f := range files {
				if !strings.HasSuffix(f, ".tmp") {
					b, _ := os.ReadFile(f)
					env = string(b)
					return true
				}
			}
			return false
		})
		for _, want := range []string{"NATGANKER_GROUP=egress", "NATGANKER_TO=" + self, "NATGANKER_FROM=" + world.Instances[1].ID,
			"NATGANKER_CAUSE=takeover", "NATGANKER_REASON=operator asked for a takeover", "NATGANKER_VERIFIED_MS="} {
			if !strings.Contains(env, want) {
				t.Errorf("hook environment lacks %s:\n%s", want, env)
			}
		}
		if err := ra.stop(t, 20*time.Second); err != nil {
			t.Errorf("run returned %v after SIGTERM", err)
		}
		if _, err := telemetry.Get(context.Background(), url); err == nil {
			t.Errorf("/metrics still served after the agent stopped")
		}
		if files, _ := filepath.Glob(filepath.Join(calls, "acquire.*")); len(files) != 1 {
			t.Errorf("on_acquire ran %d times for one takeover", len(files))
		}
	})

	t.Run("MetricsAddressTaken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := writeFile(t, "agent.hcl", motoConfig(world, moto.Endpoint, freePort(t), sock, rtb)+fmt.Sprintf(`
telemetry {
  prometheus_listen = %q
}
`, ln.Addr().String()))
		r := run(t, "run", "-config", cfg)
		if r.code != exitFailure || !strings.Contains(r.stderr, "telemetry.prometheus_listen") || !strings.Contains(r.stderr, "address already in use") {
			t.Errorf("code %d, stderr %q; want a failure naming the setting and the taken address", r.code, r.stderr)
		}
		if strings.Contains(r.stderr, `"agent: started"`) || strings.Contains(r.stderr, "peer alive") {
			t.Errorf("the agent joined before failing:\n%s", r.stderr)
		}
	})
}
