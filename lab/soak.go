package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// soak drops loss% of the packets between the NATs for d and counts ownership changes.
func (l *Lab) soak(ctx context.Context, tr *Traffic, mech Mechanism, loss int, d time.Duration) (SoakResult, error) {
	s := SoakResult{LossPercent: loss}
	for _, h := range []string{Nat1, Nat2} {
		if err := setLoss(ctx, h, loss); err != nil {
			return s, err
		}
	}
	start := time.Now()
	l.tl.Add(start, "lab", "soak: dropping %d%% of packets between the NATs for %s", loss, d)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	end := time.Now()
	for _, h := range []string{Nat1, Nat2} {
		if err := setLoss(context.Background(), h, 0); err != nil {
			return s, err
		}
	}
	return s, l.countSoak(ctx, &s, tr, mech, start, end)
}

// stallLongest is the longest stall of a stall soak: longer than keepalived's dead interval
// (3 adverts) and than memberlist's suspicion, so both detectors see the owner go silent.
const stallLongest = 4 * time.Second

// stallSoak stalls nat1's failover process (SIGSTOP to its process group) for 0.2 s to
// stallLongest, lets it run for 1–3 s, and again, for d; the kernel keeps forwarding and
// answering TCP handshakes meanwhile, as under a CPU hog that starves the process. It counts
// ownership changes as soak does.
func (l *Lab) stallSoak(ctx context.Context, tr *Traffic, mech Mechanism, d time.Duration) (SoakResult, error) {
	s := SoakResult{Kind: "stall"}
	start := time.Now()
	l.tl.Add(start, "lab", "stall soak: stalling nat1's %s again and again for %s", mech, d)
	for time.Since(start) < d && ctx.Err() == nil {
		pid := l.NodePID(Nat1)
		if pid == 0 {
			return s, fmt.Errorf("%s on %s is not running", mech, Nat1)
		}
		stall := 200*time.Millisecond + time.Duration(rand.Int64N(int64(stallLongest-200*time.Millisecond)))
		if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
			return s, fmt.Errorf("stall %s: %w", Nat1, err)
		}
		l.tl.Add(time.Now(), Nat1, "stalled for %s (SIGSTOP)", stall.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(stall):
		}
		if err := syscall.Kill(-pid, syscall.SIGCONT); err != nil {
			return s, fmt.Errorf("resume %s: %w", Nat1, err)
		}
		s.Stalls++
		s.LongestStall = max(s.LongestStall, stall.Seconds())
		select {
		case <-ctx.Done():
		case <-time.After(time.Second + time.Duration(rand.Int64N(int64(2*time.Second)))):
		}
	}
	end := time.Now()
	return s, l.countSoak(ctx, &s, tr, mech, start, end)
}

// countSoak fills in what happened between start and end of a soak.
func (l *Lab) countSoak(ctx context.Context, s *SoakResult, tr *Traffic, mech Mechanism, start, end time.Time) error {
	s.Seconds = end.Sub(start).Seconds()
	// A soak only counts when both NATs ran their failover process from start to end.
	for _, h := range []string{Nat1, Nat2} {
		if !l.NodeRunning(h) {
			return fmt.Errorf("%s on %s is not running at the end of the soak", mech, h)
		}
	}
	for _, c := range l.OwnerChanges() {
		if c.At.After(start) && !c.At.After(end) && c.Owner != "" {
			s.OwnerChanges++
		}
	}
	switch mech {
	case Natganker:
		for _, tk := range l.Takeovers() {
			if tk.At.After(start) && !tk.At.After(end) {
				s.Takeovers++
				if tk.Host == Nat2 {
					s.FalseFailovers++
				}
			}
		}
	case Keepalived:
		for _, t := range l.Transitions() {
			if t.State == "MASTER" && t.At.After(start) && !t.At.After(end) {
				s.Takeovers++
				if t.Host == Nat2 {
					s.FalseFailovers++
				}
			}
		}
	}
	s.ClientOutageMax = tr.LongestGap(start, end).Seconds()
	return ctx.Err()
}

// setLoss makes host drop percent of the packets it sends to its peer (0 removes the rule).
func setLoss(ctx context.Context, host string, percent int) error {
	_, _ = nsRun(ctx, NS(host), "nft", "delete", "table", "ip", "labloss")
	if percent == 0 {
		return nil
	}
	rules := fmt.Sprintf(`table ip labloss {
  chain out {
    type filter hook output priority 0; policy accept;
    ip daddr %s numgen random mod 100 < %d drop
  }
}
`, natIP(Peer(host)), percent)
	f := filepath.Join(os.TempDir(), "natganker-lab-loss-"+host+".nft")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		return err
	}
	defer os.Remove(f)
	if _, err := nsRun(ctx, NS(host), "nft", "-f", f); err != nil {
		return fmt.Errorf("set %d%% loss on %s: %w", percent, host, err)
	}
	return nil
}
