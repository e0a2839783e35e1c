package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/agent/telemetry"
	"github.com/natganker/natganker/lab"
)

// TestLab_Metrics scrapes both unmodified agents of the lab over HTTP through a hard kill
// and the failback: the ownership gauges follow the Elastic IP, the survivor counts one
// takeover of a dead owner with every phase timed and sees its peer dead, and after the
// failback the returning agent counts a failback takeover while the other counts the group
// released.
func TestLab_Metrics(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	l := startLab(ctx, t, lab.Options{AgentBin: agentBin, FailbackDelay: 3 * time.Second, Metrics: true}).Lab
	tr, err := l.StartTraffic(ctx)
	if err != nil {
		t.Fatalf("client traffic through nat1: %v", err)
	}

	owned := `group="egress"`
	// waitScrape scrapes host until cond holds.
	waitScrape := func(t *testing.T, host, what string, cond func(s telemetry.Scrape) bool) telemetry.Scrape {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var s telemetry.Scrape
		var err error
		for {
			s, err = l.Scrape(ctx, host)
			if err == nil && cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out waiting for %s (last scrape error %v):\n%s", host, what, err,
					s.Show("natganker_group_owned", "natganker_members", "natganker_takeovers_total", "natganker_ownership_changes_total"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitScrape(t, lab.Nat1, "nat1 owning, two members alive", func(s telemetry.Scrape) bool {
		return s.Sum("natganker_group_owned", owned) == 1 && s.Sum("natganker_members", `state="alive"`) == 2 &&
			s.Sum("natganker_datapath_healthy") == 1
	})
	waitScrape(t, lab.Nat2, "nat2 not owning, two members alive", func(s telemetry.Scrape) bool {
		return s.Sum("natganker_group_owned", owned) == 0 && s.Sum("natganker_members", `state="alive"`) == 2 &&
			s.Sum("natganker_datapath_healthy") == 1
	})

	t.Run("HardKill", func(t *testing.T) {
		f, err := l.HardKill(ctx, tr, lab.Nat1, lab.Natganker, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		s := waitScrape(t, lab.Nat2, "nat2's takeover", func(s telemetry.Scrape) bool {
			return s.Sum("natganker_group_owned", owned) == 1 && s.Sum("natganker_takeovers_total") == 1 &&
				s.Sum("natganker_members", `state="dead"`) == 1
		})
		if got := s.Sum("natganker_takeovers_total", owned, `reason="owner_dead"`); got != 1 {
			t.Errorf("takeovers of a dead owner = %v:\n%s", got, s.Show("natganker_takeovers_total"))
		}
		for _, phase := range []string{"detect", "confirm", "eip", "routes", "verify"} {
			if got := s.Sum("natganker_takeover_phase_seconds_count", owned, `phase="`+phase+`"`); got != 1 {
				t.Errorf("phase %s observed %v times, want once", phase, got)
			}
		}
		detect := s.Sum("natganker_takeover_phase_seconds_sum", `phase="detect"`)
		total := s.Sum("natganker_takeover_duration_seconds_sum", owned)
		if detect <= 0 || total < detect {
			t.Errorf("detect %.3fs, total %.3fs: want a detection time within the takeover's", detect, total)
		}
		if s.Sum("natganker_confirmation_bursts_total", `outcome="unreachable"`) < 1 {
			t.Errorf("no burst found nat1 unreachable:\n%s", s.Show("natganker_confirmation_bursts_total"))
		}
		for _, action := range []string{"AssociateAddress", "ReplaceRoute"} {
			if s.Sum("natganker_ec2_requests_total", `action="`+action+`"`, `result="ok"`) < 1 {
				t.Errorf("no successful %s counted:\n%s", action, s.Show("natganker_ec2_requests_total"))
			}
		}
		if s.Sum("natganker_memberlist_probe_duration_seconds_count") < 1 {
			t.Errorf("memberlist's probes not bridged:\n%s", s.Show("natganker_memberlist_"))
		}
		dead, cancelDead := context.WithTimeout(ctx, 5*time.Second)
		defer cancelDead()
		if _, err := l.Scrape(dead, lab.Nat1); err == nil {
			t.Errorf("nat1's endpoint still answers after the kill")
		}
		t.Logf("nat2 after the kill (outage %.3fs, decided %.3fs after the kill): detect %.3fs, kill→verified %.3fs as the metrics tell",
			f.Outage.Duration().Seconds(), f.Detection().Seconds(), detect, total)
		var lines []string
		for _, line := range strings.Split(s.Show("natganker_"), "\n") {
			if !strings.Contains(line, "_bucket{") {
				lines = append(lines, line)
			}
		}
		t.Logf("nat2's /metrics after the kill, natganker_* without histogram buckets:\n%s", strings.Join(lines, "\n"))
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
		s1 := waitScrape(t, lab.Nat1, "nat1's failback", func(s telemetry.Scrape) bool {
			return s.Sum("natganker_group_owned", owned) == 1 && s.Sum("natganker_takeovers_total") == 1
		})
		if got := s1.Sum("natganker_takeovers_total", owned, `reason="failback"`); got != 1 {
			t.Errorf("nat1 takeovers by failback = %v:\n%s", got, s1.Show("natganker_takeovers_total"))
		}
		s2 := waitScrape(t, lab.Nat2, "nat2's release", func(s telemetry.Scrape) bool {
			return s.Sum("natganker_group_owned", owned) == 0 && s.Sum("natganker_members", `state="alive"`) == 2
		})
		if got := s2.Sum("natganker_ownership_changes_total", owned, `change="release"`, `cause="taken"`); got != 1 {
			t.Errorf("nat2 releases = %v:\n%s", got, s2.Show("natganker_ownership_changes_total"))
		}
		if got := s2.Sum("natganker_takeovers_total"); got != 1 {
			t.Errorf("nat2 takeovers = %v after the failback, want still its one", got)
		}
	})
}
