package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/telemetry"
)

// startExporter builds the metrics of one agent, served on a free loopback port once the
// agent starts it; closed when the test ends.
func startExporter(t *testing.T) *telemetry.Exporter {
	t.Helper()
	e := telemetry.New(telemetry.Options{Listen: "127.0.0.1:0", Groups: []string{"egress"}, Version: "test"})
	t.Cleanup(func() { e.Close() })
	return e
}

// scrape fetches e's /metrics over HTTP.
func scrape(t *testing.T, e *telemetry.Exporter) telemetry.Scrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := telemetry.Get(ctx, "http://"+e.Addr()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitScrape scrapes e until cond holds, or fails after 30 s with what the last scrape
// showed of the metrics named in show.
func waitScrape(t *testing.T, e *telemetry.Exporter, what string, cond func(s telemetry.Scrape) bool, show ...string) telemetry.Scrape {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := scrape(t, e)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the scrape shows:\n%s", what, s.Show(show...))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMetrics_Failover scrapes two real agents (moto, memberlist) through a failover: the
// owner's gauges before, then on the survivor one takeover of a dead owner with its phase
// histograms, the ownership gauge moved, the dead member counted, the confirming burst,
// the EC2 calls of the claim, and memberlist's own probes.
func TestMetrics_Failover(t *testing.T) {
	c := agent.NewTestCluster(t, 200, 100)
	e0, e1 := startExporter(t), startExporter(t)
	a0 := c.Start(0, e0, e0)
	a1 := c.Start(1, e1, e1)
	c.WaitMembers(a0, 2)
	c.WaitMembers(a1, 2)
	c.WaitOwner(0, 30*time.Second)

	owned := `group="egress"`
	waitScrape(t, e0, "nat1 to own the group", func(s telemetry.Scrape) bool {
		return s.Sum("natganker_group_owned", owned) == 1 && s.Sum("natganker_members", `state="alive"`) == 2
	}, "natganker_group_owned", "natganker_members")
	before := waitScrape(t, e1, "nat2 to see two members", func(s telemetry.Scrape) bool {
		return s.Sum("natganker_members", `state="alive"`) == 2 && s.Sum("natganker_healthy") == 1
	}, "natganker_members", "natganker_healthy")
	if v := before.Sum("natganker_group_owned", owned); v != 0 {
		t.Errorf("nat2 natganker_group_owned = %v before the failover, want 0", v)
	}
	if v := before.Sum("natganker_takeovers_total"); v != 0 {
		t.Errorf("nat2 counted %v takeovers before any", v)
	}
	if before.Sum("natganker_ec2_requests_total", `action="DescribeAddresses"`, `result="ok"`) == 0 {
		t.Errorf("nat2 counted no DescribeAddresses call:\n%s", before.Show("natganker_ec2_requests_total"))
	}
	if before.Sum("natganker_build_info", `version="test"`) != 1 {
		t.Errorf("no build info:\n%s", before.Show("natganker_build_info"))
	}

	c.Kill(0)
	e0.Close()
	c.WaitOwner(1, 30*time.Second)
	after := waitScrape(t, e1, "nat2's takeover", func(s telemetry.Scrape) bool {
		return s.Sum("natganker_group_owned", owned) == 1 && s.Sum("natganker_takeovers_total") == 1 &&
			s.Sum("natganker_members", `state="dead"`) == 1
	}, "natganker_group_owned", "natganker_takeovers_total", "natganker_members")

	for _, chk := range []struct {
		series []string
		want   float64
	}{
		{[]string{"natganker_takeovers_total", owned, `reason="owner_dead"`}, 1},
		{[]string{"natganker_takeover_failures_total"}, 0},
		{[]string{"natganker_ownership_changes_total", owned, `change="acquire"`, `cause="takeover"`}, 1},
		{[]string{"natganker_takeover_duration_seconds_count", owned}, 1},
		{[]string{"natganker_members", `state="alive"`}, 1},
	} {
		if got := after.Sum(chk.series[0], chk.series[1:]...); got != chk.want {
			t.Errorf("%s = %v, want %v", strings.Join(chk.series, " "), got, chk.want)
		}
	}
	for _, phase := range []string{"detect", "confirm", "eip", "routes", "verify"} {
		if got := after.Sum("natganker_takeover_phase_seconds_count", owned, `phase="`+phase+`"`); got != 1 {
			t.Errorf("phase %s observed %v times, want once", phase, got)
		}
	}
	// The takeover waited for the owner's death to be detected: that phase is not empty.
	if after.Sum("natganker_takeover_phase_seconds_sum", `phase="detect"`) <= 0 {
		t.Errorf("detect phase = 0:\n%s", after.Show("natganker_takeover_phase_seconds_sum"))
	}
	if after.Sum("natganker_confirmation_bursts_total", `outcome="unreachable"`) < 1 {
		t.Errorf("no burst found the dead owner unreachable:\n%s", after.Show("natganker_confirmation_bursts_total"))
	}
	for _, action := range []string{"AssociateAddress", "ReplaceRoute"} {
		if after.Sum("natganker_ec2_requests_total", `action="`+action+`"`, `result="ok"`) < 1 {
			t.Errorf("no successful %s counted:\n%s", action, after.Show("natganker_ec2_requests_total"))
		}
	}
	if after.Sum("natganker_ec2_request_duration_seconds_count", `action="AssociateAddress"`) < 1 {
		t.Errorf("no AssociateAddress latency:\n%s", after.Show("natganker_ec2_request_duration_seconds_count"))
	}
	if after.Sum("natganker_memberlist_probe_duration_seconds_count") < 1 || after.Sum("natganker_memberlist_messages_total") < 1 {
		t.Errorf("memberlist's metrics did not move:\n%s", after.Show("natganker_memberlist_"))
	}
	t.Logf("after the failover, nat2 shows:\n%s", after.Show("natganker_takeover", "natganker_group_owned", "natganker_members",
		"natganker_ownership", "natganker_confirmation_bursts_total", "natganker_memberlist_health_score"))
}
