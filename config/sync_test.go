package config

import (
	"strings"
	"testing"
	"time"
)

func TestParse_ConntrackSync(t *testing.T) {
	if c := mustParse(t, minimal); c.ConntrackSync != (ConntrackSync{Enabled: true, MaxFlows: 262144,
		FlushInterval: 100 * time.Millisecond, ResyncInterval: time.Minute}) {
		t.Errorf("default conntrack_sync = %+v: want it on, 262144 flows, 100ms, 1m", c.ConntrackSync)
	}
	c := mustParse(t, minimal+`
conntrack_sync {
  enabled         = false
  max_flows       = 50000
  flush_interval  = "50ms"
  resync_interval = "30s"
}
`)
	if want := (ConntrackSync{MaxFlows: 50000, FlushInterval: 50 * time.Millisecond, ResyncInterval: 30 * time.Second}); c.ConntrackSync != want {
		t.Errorf("conntrack_sync = %+v, want %+v", c.ConntrackSync, want)
	}
	for _, tt := range []struct{ name, src, want string }{
		{"NoFlows", `conntrack_sync { max_flows = 0 }`, `conntrack_sync.max_flows: must be between 1 and 4194304 (got 0)`},
		{"FlushTooSlow", `conntrack_sync { flush_interval = "10s" }`, `conntrack_sync.flush_interval: must be between 10ms and 5s (got 10s)`},
		{"ResyncTooOften", `conntrack_sync { resync_interval = "1s" }`, `conntrack_sync.resync_interval: must be between 5s and 1h (got 1s)`},
		{"NotBool", `conntrack_sync { enabled = "yes" }`, `enabled`},
		{"Unknown", `conntrack_sync { peers = [] }`, `unknown`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := parseErr(t, minimal+tt.src+"\n")
			if !strings.Contains(strings.Join(lines, "\n"), tt.want) {
				t.Fatalf("errors:\n%s\nwant one containing %q", strings.Join(lines, "\n"), tt.want)
			}
		})
	}
}
