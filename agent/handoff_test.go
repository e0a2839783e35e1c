package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/ec2/ec2test"
	"github.com/natganker/natganker/gossip"
)

// startLoopWith is startLoop with further dependencies set by deps.
func startLoopWith(t *testing.T, self string, cfg *config.Config, cloud *fakeCloud, deps func(d *Deps)) *loopAgent {
	t.Helper()
	l := &loopAgent{cloud: cloud, gossip: newFakeGossip(), log: &syncBuffer{}}
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: l.log})
	d := Deps{Cloud: cloud, Membership: l.gossip, Version: "test"}
	deps(&d)
	a, err := New(cfg, ec2.Identity{InstanceID: self, LocalIPv4: "127.0.0.1"}, d, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Agent = a
	t.Cleanup(func() {
		l.kill()
		if t.Failed() {
			t.Logf("agent log:\n%s", l.log.String())
		}
	})
	return l
}

func TestNoticeDue(t *testing.T) {
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	all := config.Handoff{SpotInterruption: true, Rebalance: true, ScheduledMaintenance: true, ASGTerminated: true,
		MaintenanceLead: 10 * time.Minute, PollInterval: time.Second}
	defaults := config.Default().Handoff
	spot := &ec2.SpotAction{Action: "terminate", Time: now.Add(2 * time.Minute)}
	event := func(in time.Duration, state string) []ec2.MaintenanceEvent {
		return []ec2.MaintenanceEvent{{Code: "system-reboot", State: state, EventID: "instance-event-1", NotBefore: now.Add(in)}}
	}
	off := func(fn func(h *config.Handoff)) config.Handoff { h := all; fn(&h); return h }
	tests := []struct {
		name string
		n    ec2.Notices
		h    config.Handoff
		want string // notice kind, "" for none
	}{
		{"Nothing", ec2.Notices{}, all, ""},
		{"Spot", ec2.Notices{Spot: spot}, all, noticeSpot},
		{"SpotByDefault", ec2.Notices{Spot: spot}, defaults, noticeSpot},
		{"SpotDisabled", ec2.Notices{Spot: spot}, off(func(h *config.Handoff) { h.SpotInterruption = false }), ""},
		{"RebalanceNotByDefault", ec2.Notices{Rebalance: now}, defaults, ""},
		{"RebalanceEnabled", ec2.Notices{Rebalance: now}, all, noticeRebalance},
		{"ASGTerminated", ec2.Notices{LifecycleState: "Terminated"}, defaults, noticeASG},
		{"ASGInService", ec2.Notices{LifecycleState: "InService"}, all, ""},
		{"ASGWarmedTerminated", ec2.Notices{LifecycleState: "Warmed:Terminated"}, all, ""},
		{"ASGDisabled", ec2.Notices{LifecycleState: "Terminated"}, off(func(h *config.Handoff) { h.ASGTerminated = false }), ""},
		{"MaintenanceWithinLead", ec2.Notices{Maintenance: event(9*time.Minute, "active")}, all, noticeMaintenance},
		{"MaintenanceAtLead", ec2.Notices{Maintenance: event(10*time.Minute, "active")}, all, noticeMaintenance},
		{"MaintenanceStarted", ec2.Notices{Maintenance: event(-time.Hour, "active")}, all, noticeMaintenance},
		{"MaintenanceLater", ec2.Notices{Maintenance: event(11*time.Minute, "active")}, all, ""},
		{"MaintenanceNoState", ec2.Notices{Maintenance: event(time.Minute, "")}, all, noticeMaintenance},
		{"MaintenanceOtherState", ec2.Notices{Maintenance: event(time.Minute, "canceled")}, all, ""},
		{"MaintenanceLongerLead", ec2.Notices{Maintenance: event(50*time.Minute, "active")},
			off(func(h *config.Handoff) { h.MaintenanceLead = time.Hour }), noticeMaintenance},
		{"MaintenanceDisabled", ec2.Notices{Maintenance: event(time.Minute, "active")},
			off(func(h *config.Handoff) { h.ScheduledMaintenance = false }), ""},
		{"SpotFirst", ec2.Notices{Spot: spot, Rebalance: now, LifecycleState: "Terminated"}, all, noticeSpot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := noticeDue(tt.n, tt.h, now)
			if ok != (tt.want != "") || n.kind != tt.want {
				t.Errorf("noticeDue = %q, %v; want %q", n.kind, ok, tt.want)
			}
		})
	}
}

// handoffConfig is a loop configuration that polls the metadata service every 50ms.
func handoffConfig(prio int) *config.Config {
	cfg := loopConfig(prio, time.Hour)
	cfg.Handoff.PollInterval = 50 * time.Millisecond
	return cfg
}

// TestHandoff_SpotNoticeHandsOverAndStaysUp: the owner polls an IMDSv2 server; a spot
// interruption notice appears; the owner announces it is leaving with every group yielded,
// waits until EC2 shows the peer holding the group, and stays up without ever claiming
// again, not even when the peer dies later.
func TestHandoff_SpotNoticeHandsOverAndStaysUp(t *testing.T) {
	noLeak(t)
	imds := ec2test.StartNoticeIMDS(t)
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2")
	l := startLoopWith(t, "i-a", handoffConfig(200), cloud, func(d *Deps) { d.Notices = ec2.NewNoticeReader(imds.Endpoint) })
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	waitFor(t, "a few polls", func() bool { return imds.Gets(ec2.SpotActionPath) >= 2 })
	if l.logged("handing over") || l.leaving() {
		t.Fatalf("handing over with no notice")
	}

	imds.Set(ec2.SpotActionPath, `{"action": "terminate", "time": "2026-12-01T18:16:54Z"}`)
	waitFor(t, "the leaving announcement", func() bool {
		var out bool
		l.gossip.set(func(g *fakeGossip) {
			for _, m := range g.published {
				out = out || (m.Leaving && m.Groups["egress"].Yielded)
			}
		})
		return out
	})
	if !l.logged("spot interruption notice: this instance is going away") || !l.logged("action=terminate") {
		t.Errorf("the notice is not logged clearly:\n%s", l.log.String())
	}
	// The peer takes over (as it would on the announcement); the handover completes.
	cloud.set(func(f *fakeCloud) {
		f.eip = "i-b"
		for tb := range f.routes {
			f.routes[tb] = "i-b"
		}
	})
	waitFor(t, "the handover to complete", func() bool { return l.logged("handover complete") })

	// Still up, and leaving for good.
	ms, err := l.Members(context.Background())
	if err != nil {
		t.Fatalf("agent not answering after the handover: %v", err)
	}
	if ms[0].State != "leaving" || !ms[0].Groups[0].Yielded {
		t.Errorf("self = %+v, want leaving with the group yielded", ms[0])
	}
	res, err := l.Resume(context.Background(), nil)
	if err != nil || !strings.Contains(res.Message, "leaving (spot interruption notice)") {
		t.Errorf("resume = %+v, %v; want a refusal naming the notice", res, err)
	}
	if _, err := l.Takeover(context.Background(), nil); err == nil {
		t.Errorf("takeover accepted on a node that is leaving")
	}
	// The peer dies: a leaving node does not take the group back.
	l.gossip.set(func(g *fakeGossip) { g.probes["i-b"] = gossip.Probe{} })
	l.gossip.peer("i-b", gossip.StateDead, 100, true)
	if n := l.claimsStarted(t); n != 0 {
		t.Fatalf("a node leaving on a notice claimed: %s", describe(cloud.claimLog()))
	}
	if cs := cloud.claimLog(); len(cs) != 0 {
		t.Fatalf("claims = %s, want none", describe(cs))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func (l *loopAgent) leaving() bool {
	var out bool
	_ = l.do(context.Background(), func() { out = l.leave != nil })
	return out
}

// flakyNotices is a NoticeSource whose answers the test sets; it counts the reads.
type flakyNotices struct {
	mu      sync.Mutex
	down    bool
	broken  error
	notices ec2.Notices
	reads   int
}

func (f *flakyNotices) ReadNotices(ctx context.Context) (ec2.Notices, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	switch {
	case f.down:
		return ec2.Notices{}, fmt.Errorf("%w at http://169.254.169.254: dial tcp: connection refused", ec2.ErrMetadataUnreachable)
	case f.broken != nil:
		return f.notices, f.broken
	}
	return f.notices, nil
}

func (f *flakyNotices) set(fn func(f *flakyNotices)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *flakyNotices) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// TestHandoff_MetadataUnreachable: a metadata service that does not answer is logged once,
// polled on, and does not stop the agent; once it answers, a notice is acted on.
func TestHandoff_MetadataUnreachable(t *testing.T) {
	noLeak(t)
	src := &flakyNotices{down: true}
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoopWith(t, "i-a", handoffConfig(200), cloud, func(d *Deps) { d.Notices = src })
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	waitFor(t, "several polls of the unreachable service", func() bool { return src.count() >= 5 })
	if n := strings.Count(l.log.String(), "instance metadata unreachable: notices"); n != 1 {
		t.Errorf("unreachable logged %d times, want once:\n%s", n, l.log.String())
	}
	if st := l.status(t); st.EC2Owner != "i-a" {
		t.Errorf("the agent stopped working: %+v", st)
	}

	// A path that answers garbage is logged once too, and the rest still counts.
	src.set(func(f *flakyNotices) {
		f.down, f.broken = false, errors.New("events/maintenance/scheduled: not a list")
	})
	n := src.count()
	waitFor(t, "polls of the broken path", func() bool { return src.count() >= n+5 })
	if c := strings.Count(l.log.String(), "could not read a notice"); c != 1 {
		t.Errorf("broken path logged %d times, want once", c)
	}
	src.set(func(f *flakyNotices) {
		f.broken = nil
		f.notices = ec2.Notices{LifecycleState: ec2.LifecycleTerminated}
	})
	waitFor(t, "the handover on the Auto Scaling notice", func() bool { return l.leaving() })
	if !l.logged("instance metadata readable again") || !l.logged("Auto Scaling termination: this instance is going away") {
		t.Errorf("recovery or notice not logged:\n%s", l.log.String())
	}
	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
	waitFor(t, "the handover to complete", func() bool { return l.logged("handover complete") })
	// The poller stops once the node is leaving.
	n = src.count()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := src.count(); got > n+1 {
		t.Errorf("polled %d more times after the notice", got-n)
	}
}

// TestHandoff_CloseDuringNoticeHandover: SIGTERM while a handover on a notice still waits for
// the peer: Close waits for that handover instead of cutting it short.
func TestHandoff_CloseDuringNoticeHandover(t *testing.T) {
	noLeak(t)
	src := &flakyNotices{}
	cloud := newFakeCloud("i-a", "rtb-1")
	l := startLoopWith(t, "i-a", handoffConfig(200), cloud, func(d *Deps) { d.Notices = src })
	l.gossip.peer("i-b", gossip.StateAlive, 100, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })
	src.set(func(f *flakyNotices) {
		f.notices = ec2.Notices{Spot: &ec2.SpotAction{Action: "stop", Time: time.Now()}}
	})
	waitFor(t, "the handover to wait for the peer", func() bool { return l.logged("handing over on spot interruption notice") })
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	waitFor(t, "Close to wait for the handover", func() bool {
		var n int
		_ = l.do(context.Background(), func() { n = len(l.leave.done) })
		return n == 2
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the peer had not taken the group", err)
	default:
	}
	cloud.set(func(f *fakeCloud) { f.eip, f.routes["rtb-1"] = "i-b", "i-b" })
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the peer took the group")
	}
	if !l.logged("handover complete") {
		t.Errorf("handover did not complete:\n%s", l.log.String())
	}
}
