package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse_OperateBlocks(t *testing.T) {
	t.Run("Defaults", func(t *testing.T) {
		c := mustParse(t, minimal)
		if c.Telemetry.PrometheusListen != "" {
			t.Errorf("metrics served by default on %q", c.Telemetry.PrometheusListen)
		}
		if len(c.Hooks.OnAcquire)+len(c.Hooks.OnRelease)+len(c.Hooks.OnMember) != 0 || c.Hooks.Timeout != 30*time.Second {
			t.Errorf("hooks = %+v, want none with a 30s timeout", c.Hooks)
		}
		want := Handoff{SpotInterruption: true, ScheduledMaintenance: true, ASGTerminated: true,
			MaintenanceLead: 10 * time.Minute, PollInterval: 2 * time.Second}
		if c.Handoff != want {
			t.Errorf("handoff = %+v, want %+v", c.Handoff, want)
		}
	})
	t.Run("Set", func(t *testing.T) {
		c := mustParse(t, minimal+`
telemetry { prometheus_listen = "198.18.1.11:9720" }
hooks {
  on_acquire = ["/usr/local/bin/notify", "acquire"]
  on_member  = ["/bin/true"]
  timeout    = "5s"
}
handoff {
  spot_interruption = false
  rebalance         = true
  maintenance_lead  = "1h"
  poll_interval     = "500ms"
}
`)
		if c.Telemetry.PrometheusListen != "198.18.1.11:9720" {
			t.Errorf("prometheus_listen = %q", c.Telemetry.PrometheusListen)
		}
		if !reflect.DeepEqual(c.Hooks, Hooks{OnAcquire: []string{"/usr/local/bin/notify", "acquire"}, OnMember: []string{"/bin/true"}, Timeout: 5 * time.Second}) {
			t.Errorf("hooks = %+v", c.Hooks)
		}
		want := Handoff{Rebalance: true, ScheduledMaintenance: true, ASGTerminated: true, MaintenanceLead: time.Hour, PollInterval: 500 * time.Millisecond}
		if c.Handoff != want {
			t.Errorf("handoff = %+v, want %+v", c.Handoff, want)
		}
	})
	for _, tt := range []struct {
		name, src, want string
	}{
		{"ListenNoPort", `telemetry { prometheus_listen = "127.0.0.1" }`, `telemetry.prometheus_listen: must be an IP address and port such as "127.0.0.1:9720" (got "127.0.0.1")`},
		{"ListenHostname", `telemetry { prometheus_listen = "localhost:9720" }`, `telemetry.prometheus_listen: must be an IP address and port`},
		{"RelativeHook", `hooks { on_release = ["notify.sh"] }`, `hooks.on_release: must start with an absolute path to the program`},
		{"HookNotList", `hooks { on_acquire = "/bin/true" }`, `on_acquire`},
		{"HookTimeout", `hooks { timeout = "0s" }`, `hooks.timeout: must be between 1s and 10m (got 0s)`},
		{"PollTooSlow", `handoff { poll_interval = "5m" }`, `handoff.poll_interval: must be between 100ms and 1m (got 5m0s)`},
		{"LeadTooShort", `handoff { maintenance_lead = "10s" }`, `handoff.maintenance_lead: must be between 1m and 24h (got 10s)`},
		{"Unknown", `handoff { spot = true }`, `unknown`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := parseErr(t, minimal+tt.src+"\n")
			if !strings.Contains(strings.Join(lines, "\n"), tt.want) {
				t.Fatalf("errors:\n%s\nwant one containing %q", strings.Join(lines, "\n"), tt.want)
			}
		})
	}
}
