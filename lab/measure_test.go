package lab

import (
	"strings"
	"testing"
	"time"
)

func TestTraffic_OutageAfter(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	// Probes every 10 ms with a 1 ms round trip, none answered between 100 and 1300 ms.
	var replies []udpReply
	for seq, ms := uint64(1), 0; ms <= 1500; seq, ms = seq+1, ms+10 {
		if ms >= 100 && ms < 1300 {
			continue
		}
		replies = append(replies, udpReply{seq: seq, sent: at(ms), recv: at(ms + 1)})
	}
	tests := []struct {
		name     string
		kill     time.Time
		wantOK   bool
		wantGap  time.Duration
		wantLost int
	}{
		{name: "KillInsideGap", kill: at(105), wantOK: true, wantGap: 1210 * time.Millisecond, wantLost: 120},
		{name: "KillBeforeGap", kill: at(95), wantOK: true, wantGap: 1210 * time.Millisecond, wantLost: 120},
		{name: "NoGap", kill: at(1405), wantOK: true, wantGap: 10 * time.Millisecond, wantLost: 0},
		{name: "NoReplyAfterYet", kill: at(1600), wantOK: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &Traffic{udp: replies}
			o, ok := tr.OutageAfter(tc.kill)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if o.Duration() != tc.wantGap || o.Lost != tc.wantLost {
				t.Errorf("outage %s with %d lost, want %s with %d lost", o.Duration(), o.Lost, tc.wantGap, tc.wantLost)
			}
		})
	}
}

func TestTraffic_ConsumeAndTCP(t *testing.T) {
	in := strings.Join([]string{
		"tc 1000000000",
		"u 1 1000000000 1001000000",
		"t 1100000000",
		"te 1500000000 read: connection reset by peer",
		"tc 1800000000",
		"t 1900000000",
		"sc push 1000000000",
		"s push 1100000000",
		"se push 1500000000 read: connection reset by peer",
		"sc push 1800000000",
		"s push 1900000000",
		"sc download 1000000000",
		"s download 1100000000",
		"s download 1900000000",
		"garbage",
	}, "\n")
	var broke []string
	tr := &Traffic{}
	tr.consume(strings.NewReader(in), func(_ time.Time, what, msg string) { broke = append(broke, what+": "+msg) })
	if len(tr.udp) != 1 || len(tr.tcpEcho) != 2 || len(tr.tcpConns) != 2 || len(tr.tcpErrs) != 1 {
		t.Fatalf("parsed udp=%d echo=%d conns=%d errs=%d", len(tr.udp), len(tr.tcpEcho), len(tr.tcpConns), len(tr.tcpErrs))
	}
	if len(broke) != 2 || broke[0] != "TCP echo: read: connection reset by peer" || broke[1] != "push stream: read: connection reset by peer" {
		t.Errorf("break callback got %q", broke)
	}
	ns := func(n int64) time.Time { return time.Unix(0, n) }
	if tr.TCPSurvived(ns(1_200_000_000), ns(1_300_000_000), ns(2_000_000_000)) {
		t.Errorf("connection reset inside the window counted as survived")
	}
	if !tr.TCPSurvived(ns(1_600_000_000), ns(1_700_000_000), ns(2_000_000_000)) {
		t.Errorf("new connection echoing after recovery not counted as survived")
	}
	if tr.StreamSurvived("push", ns(1_200_000_000), ns(1_300_000_000), ns(2_000_000_000)) || tr.StreamErrorsBetween("push", ns(1_200_000_000), ns(2_000_000_000)) != 1 {
		t.Errorf("push stream reset inside the window counted as survived")
	}
	if !tr.StreamSurvived("download", ns(1_200_000_000), ns(1_300_000_000), ns(2_000_000_000)) {
		t.Errorf("download with data after recovery and no break not counted as survived")
	}
}

func TestSnapshot_Owner(t *testing.T) {
	tests := []struct {
		name string
		s    Snapshot
		want string
	}{
		{"AllOnOne", Snapshot{EIPHolder: "i-1", Routes: map[string]string{"rtb-a": "i-1", "rtb-b": "i-1"}}, "i-1"},
		{"RouteLagging", Snapshot{EIPHolder: "i-2", Routes: map[string]string{"rtb-a": "i-2", "rtb-b": "i-1"}}, ""},
		{"EIPUnassociated", Snapshot{EIPHolder: "", Routes: map[string]string{"rtb-a": "i-1"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Owner(); got != tc.want {
				t.Errorf("Owner() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	xs := make([]float64, 0, 20)
	for i := 20; i >= 1; i-- {
		xs = append(xs, float64(i)/10)
	}
	got := summarize(xs)
	want := Stats{N: 20, P50: 1.0, P95: 1.9, Max: 2.0}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if (summarize(nil) != Stats{}) {
		t.Errorf("summarize(nil) not zero")
	}
}

func TestBenchResult_Table(t *testing.T) {
	r := &BenchResult{
		Failovers: map[Mechanism][]RunResult{
			Natganker:  {{Outage: 1, Detection: 0.5, Converged: 0.9, TCPSurvived: true, Streams: map[string]bool{"push": true, "download": true}}},
			Keepalived: {{Outage: 4, Detection: 3, Converged: 5, Streams: map[string]bool{"push": false, "download": false}}},
		},
		Soaks: map[Mechanism][]SoakResult{Natganker: {{LossPercent: 5, Seconds: 600}}},
	}
	table := r.Table()
	for _, want := range []string{"| natganker | client outage | 1 | 1.00 s", "| keepalived | client outage | 1 | 4.00 s",
		"| natganker | long TCP connection survived (client writes, server echoes) | 1 | 1 of 1",
		"| natganker | push stream survived (server writes, client only reads) | 1 | 1 of 1",
		"| keepalived | download stream survived (server writes, client only reads) | 1 | 0 of 1",
		"| natganker | 5% | 600 s | 0 |", "= 4.0×"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	// Without soaks there is no soak table.
	if noSoak := (&BenchResult{Failovers: r.Failovers}).Table(); strings.Contains(noSoak, "loss between NATs") {
		t.Errorf("a soak table without soaks:\n%s", noSoak)
	}
	if svg := r.SVG(); !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "keepalived") {
		t.Errorf("SVG plot malformed:\n%s", svg)
	}
}
