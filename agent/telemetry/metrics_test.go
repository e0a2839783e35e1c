package telemetry

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"go.uber.org/goleak"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/ec2"
)

func scrapeHandler(t *testing.T, e *Exporter) Scrape {
	t.Helper()
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	s, err := Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestExporter_Lifecycle: New serves nothing, Start serves /metrics, Close stops it and may
// be called again; a taken address is an error naming the setting; nothing is left running.
func TestExporter_Lifecycle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := New(Options{Listen: ln.Addr().String()})
	err = taken.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "telemetry.prometheus_listen") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Start on a taken address = %v", err)
	}
	if err := taken.Close(); err != nil {
		t.Errorf("Close after a failed Start = %v", err)
	}

	e := New(Options{Listen: "127.0.0.1:0", Groups: []string{"egress", "ingress"}, Version: "v1.2.3"})
	if e.Addr() != "" {
		t.Fatalf("New listens on %s", e.Addr())
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Get(ctx, "http://"+e.Addr()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{`natganker_group_owned{group="egress"}`, `natganker_group_owned{group="ingress"}`, `natganker_members{state="alive"}`} {
		if v, ok := s[series]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0 before any event", series, v, ok)
		}
	}
	if s.Sum("natganker_build_info", `version="v1.2.3"`) != 1 || s.Sum("go_goroutines") == 0 {
		t.Errorf("build info or Go metrics missing:\n%s", s.Show("natganker_build_info", "go_goroutines"))
	}
	addr := e.Addr()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := Get(ctx, "http://"+addr+"/metrics"); err == nil {
		t.Errorf("still served after Close")
	}
}

// TestExporter_Events: the agent's events and EC2 calls move the metrics a user reads.
func TestExporter_Events(t *testing.T) {
	e := New(Options{Listen: "127.0.0.1:0", Groups: []string{"egress"}})
	tv := &agent.TakeoverView{Detected: 900 * time.Millisecond, Confirmed: 40 * time.Millisecond,
		EIPMoved: 30 * time.Millisecond, RoutesMoved: 50 * time.Millisecond, Verified: 120 * time.Millisecond}
	for _, ev := range []agent.Event{
		{Kind: agent.EventHealth, Healthy: true, DatapathHealthy: true},
		{Kind: agent.EventMember, Member: "i-a", State: "alive", Healthy: true},
		{Kind: agent.EventMember, Member: "i-c", State: "alive", Healthy: false},
		{Kind: agent.EventMember, Member: "i-a", State: "dead"},
		{Kind: agent.EventBurst, Member: "i-a", Outcome: agent.BurstUnreachable, Took: 250 * time.Millisecond},
		{Kind: agent.EventClaim, Group: "egress", Cause: "owner_dead", Takeover: tv},
		{Kind: agent.EventAcquire, Group: "egress", Cause: "takeover", Takeover: tv},
		{Kind: agent.EventClaim, Group: "egress", Cause: "repair", Repair: true, Takeover: &agent.TakeoverView{}},
		{Kind: agent.EventClaim, Group: "egress", Cause: "failback", Takeover: &agent.TakeoverView{Error: "throttled"}},
	} {
		e.Event(ev)
	}
	e.EC2Call(ec2.Call{Action: "AssociateAddress", Attempts: 3, Took: 400 * time.Millisecond})
	e.EC2Call(ec2.Call{Action: "ReplaceRoute", Attempts: 1, Took: 20 * time.Millisecond, Err: context.DeadlineExceeded})
	s := scrapeHandler(t, e)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"natganker_group_owned", []string{`group="egress"`}, 1},
		{"natganker_members", []string{`state="alive"`}, 2}, // this node and i-c
		{"natganker_members", []string{`state="dead"`}, 1},
		{"natganker_members_unhealthy", nil, 1},
		{"natganker_healthy", nil, 1},
		{"natganker_takeovers_total", []string{`group="egress"`, `reason="owner_dead"`}, 1},
		{"natganker_takeover_failures_total", []string{`reason="failback"`}, 1},
		{"natganker_drift_repairs_total", []string{`group="egress"`}, 1},
		{"natganker_takeover_phase_seconds_count", nil, 5},
		{"natganker_takeover_phase_seconds_sum", []string{`phase="detect"`}, 0.9},
		{"natganker_takeover_duration_seconds_sum", nil, 1.02},
		{"natganker_confirmation_bursts_total", []string{`outcome="unreachable"`}, 1},
		{"natganker_ownership_changes_total", []string{`change="acquire"`, `cause="takeover"`}, 1},
		{"natganker_ec2_requests_total", []string{`action="AssociateAddress"`, `result="ok"`}, 1},
		{"natganker_ec2_requests_total", []string{`action="ReplaceRoute"`, `result="timeout"`}, 1},
		{"natganker_ec2_retries_total", []string{`action="AssociateAddress"`}, 2},
	} {
		if got := s.Sum(c.name, c.labels...); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestMemberlistBridge: what memberlist reports through go-metrics' global sink reaches a
// started exporter under Prometheus names, timers in seconds, and stops at Close.
func TestMemberlistBridge(t *testing.T) {
	e := New(Options{Listen: "127.0.0.1:0"})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// As memberlist v0.7.0 calls them.
	metrics.IncrCounterWithLabels([]string{"memberlist", "msg", "dead"}, 1, nil)
	metrics.SetGaugeWithLabels([]string{"memberlist", "health", "score"}, 3, nil)
	metrics.MeasureSinceWithLabels([]string{"memberlist", "probeNode"}, time.Now().Add(-250*time.Millisecond), nil)
	metrics.SetGaugeWithLabels([]string{"memberlist", "node", "instances"}, 2, []metrics.Label{{Name: "node_state", Value: "alive"}})
	metrics.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 120, nil)
	s := scrapeHandler(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	metrics.IncrCounterWithLabels([]string{"memberlist", "msg", "dead"}, 1, nil)
	after := scrapeHandler(t, e)

	if s.Sum("natganker_memberlist_messages_total", `type="dead"`) != 1 || s.Sum("natganker_memberlist_health_score") != 3 ||
		s.Sum("natganker_memberlist_nodes", `state="alive"`) != 2 || s.Sum("natganker_memberlist_sent_bytes_total", `protocol="udp"`) != 120 {
		t.Errorf("bridged metrics:\n%s", s.Show("natganker_memberlist_"))
	}
	if sec := s.Sum("natganker_memberlist_probe_duration_seconds_sum"); sec < 0.25 || sec > 60 {
		t.Errorf("probe time = %vs, want the 250ms+ measured, in seconds", sec)
	}
	if after.Sum("natganker_memberlist_messages_total", `type="dead"`) != 1 {
		t.Errorf("counted after Close")
	}
}
