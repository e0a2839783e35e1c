package lab

import (
	"strings"
	"testing"
	"time"
)

func TestTraffic_LostBetween(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	var replies []udpReply
	for seq, ms := uint64(1), 0; ms <= 1000; seq, ms = seq+1, ms+10 {
		if ms == 500 || ms == 510 {
			continue // two probes lost
		}
		replies = append(replies, udpReply{seq: seq, sent: at(ms), recv: at(ms + 1)})
	}
	tr := &Traffic{udp: replies}
	if sent, lost := tr.LostBetween(at(405), at(605)); sent != 20 || lost != 2 {
		t.Errorf("around the loss: %d sent, %d lost; want 20 and 2", sent, lost)
	}
	if sent, lost := tr.LostBetween(at(105), at(305)); sent != 20 || lost != 0 {
		t.Errorf("before the loss: %d sent, %d lost; want 20 and 0", sent, lost)
	}
	if sent, _ := tr.LostBetween(at(905), at(2000)); sent != 0 {
		t.Errorf("no probe answered after the window yet, but %d counted", sent)
	}
}

func TestBenchResult_HandoffTable(t *testing.T) {
	r := &BenchResult{
		Failovers: map[Mechanism][]RunResult{Natganker: {{Outage: 1.05, Lost: 104, TCPSurvived: true}, {Outage: 0.9, Lost: 89, TCPSurvived: true}}},
		Handoffs: map[Mechanism][]HandoffResult{Natganker: {
			{NoticeToEC2: 1.2, Sent: 250, Lost: 0, LongestGap: 0.012, TCPSurvived: true},
			{NoticeToEC2: 2.1, Sent: 260, Lost: 1, LongestGap: 0.021, TCPSurvived: true},
		}},
	}
	table := r.Table()
	for _, want := range []string{
		"| hard kill of the owner | 2 | 89 | 104 | 104 | 0 of 2 | 0.900 s | 1.050 s | 1.050 s | 2 of 2 |",
		"| spot interruption notice to the owner | 2 | 0 | 1 | 1 | 1 of 2 | 0.012 s | 0.021 s | 0.021 s | 2 of 2 |",
		"p50 1.20 s, p95 2.10 s, max 2.10 s",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if (&BenchResult{}).handoffTable() != "" {
		t.Errorf("a table without handoffs")
	}
}
