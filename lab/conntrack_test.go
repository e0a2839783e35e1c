package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/natganker/natganker/lab"
)

// TestLab_ConnectionsSurviveHardKill: the client keeps a TCP echo it writes to, a push
// stream and a download it only reads from inet. With connection sync (the default) all
// three live through a hard kill of the owning NAT; with it off (the control) the server's
// next packet reaches a NAT without the flow and the push stream is reset.
func TestLab_ConnectionsSurviveHardKill(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	for _, tc := range []struct {
		name string
		off  bool
	}{{"SyncOn", false}, {"SyncOff", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			p := startLab(ctx, t, lab.Options{AgentBin: agentBin, FailbackDelay: 3 * time.Second, NoConntrackSync: tc.off})
			tr, err := p.StartTraffic(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Every stream is flowing, and the backup has heard of it, before the kill.
			since := time.Now()
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				now := time.Now()
				flowing := tr.TCPSurvived(since, since, now)
				for _, k := range lab.Streams {
					flowing = flowing && tr.StreamSurvived(k, since, since, now)
				}
				if flowing {
					break
				}
				if now.After(deadline) {
					t.Fatal("the client's connections never all carried data")
				}
			}
			// With sync on, the backup holds nat1's four flows (the UDP probes, the echo, the
			// push stream and the download) before the kill.
			for deadline := time.Now().Add(30 * time.Second); !tc.off; time.Sleep(50 * time.Millisecond) {
				st, err := p.Status(ctx, lab.Nat2)
				if err == nil && st.ConntrackSync != nil && st.ConntrackSync.Held[p.id(lab.Nat1)] >= 4 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("nat2 never held nat1's flows: %+v (%v)", st.ConntrackSync, err)
				}
			}
			f, err := p.HardKill(ctx, tr, lab.Nat1, lab.Natganker, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("hard kill of nat1: outage %.3fs; survived: echo %v, push %v, download %v",
				f.Outage.Duration().Seconds(), f.TCPSurvived, f.Streams["push"], f.Streams["download"])
			if tc.off {
				if f.Streams["push"] {
					t.Error("without connection sync the push stream survived: the control shows nothing")
				}
				return
			}
			if !f.TCPSurvived || !f.Streams["push"] || !f.Streams["download"] {
				t.Errorf("with connection sync a connection broke: echo %v, push %v, download %v", f.TCPSurvived, f.Streams["push"], f.Streams["download"])
			}
			if len(logged(t, p.Lab, lab.Nat2, "installed the former owner's flows", time.Time{})) == 0 {
				t.Error("nat2 logged no installed flows")
			}
		})
	}
}
