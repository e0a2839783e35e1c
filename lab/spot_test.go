package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/lab"
)

// TestLab_SpotNotice: nat1's metadata mock (amazon-ec2-metadata-mock, spot mode) starts
// serving a spot interruption notice. nat1's agent hands the group to nat2 while nat1 still
// forwards, stays up, and does not take the group back after the failback delay; restarted
// on an instance without the notice, it fails back as usual. The client's probes during the
// handoff are counted and logged (`make bench` gives their distribution next to hard kills).
func TestLab_SpotNotice(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const failback = 3 * time.Second
	p := startPair(ctx, t, buildAgent(t), failback)
	tr, err := p.StartTraffic(ctx)
	if err != nil {
		t.Fatalf("client traffic through nat1: %v", err)
	}

	h, err := p.SpotNotice(ctx, tr, lab.Nat1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("spot notice to nat1 → nat2 owns in EC2 %.3fs later; client: %d of %d probes lost, longest gap %.3fs, TCP survived %v",
		h.ConvergedAt.Sub(h.NoticeAt).Seconds(), h.Lost, h.Sent, h.LongestGap.Seconds(), h.TCPSurvived)
	if h.Sent == 0 {
		t.Errorf("no client probe measured around the handoff")
	}
	if !h.TCPSurvived {
		t.Errorf("the long TCP connection broke during a planned handoff")
	}
	if lns := logged(t, p.Lab, lab.Nat1, "spot interruption notice: this instance is going away", h.WindowFrom); len(lns) == 0 {
		t.Errorf("nat1 did not log the notice")
	}
	tk := p.waitTakeover(ctx, t, lab.Nat2, h.WindowFrom)
	if !strings.Contains(tk.Reason, "shutting down") {
		t.Errorf("nat2 took over with reason %q, want nat1 shutting down", tk.Reason)
	}
	// A node leaving on a notice does not take the group back, though it outranks nat2 and
	// has been healthy for longer than the failback delay.
	p.holdOwner(ctx, t, 3*failback, "while nat1 leaves on its spot notice")
	if !p.NodeRunning(lab.Nat1) {
		t.Errorf("nat1's agent exited after the notice; it should stay up, leaving")
	}
	ms, err := p.Members(ctx, lab.Nat1)
	if err != nil || len(ms) == 0 || ms[0].State != "leaving" {
		t.Errorf("nat1 members = %+v, %v; want itself leaving", ms, err)
	}

	// Without the notice, a restarted nat1 is an ordinary member again.
	if err := p.EndNotice(ctx, lab.Nat1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitOwner(ctx, lab.Nat1, time.Minute); err != nil {
		t.Fatal(err)
	}
	p.requireOwners(t, lab.Nat1, lab.Nat2, lab.Nat1)
}
