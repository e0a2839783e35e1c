package config

import (
	"net/netip"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// The blocks that concern running the agent in production rather than failover itself:
// metrics, event hooks and planned handoffs.

// Telemetry configures what the agent exposes for monitoring.
type Telemetry struct {
	// PrometheusListen is the host:port of the Prometheus /metrics endpoint; empty (the
	// default) serves none.
	PrometheusListen string
}

// Hooks are commands run on ownership and membership events, like keepalived's notify
// scripts. Each is an argv (no shell); empty means none. They are run with NATGANKER_*
// environment variables describing the event, never block or delay a takeover, and each
// event runs each hook at most once.
type Hooks struct {
	// OnAcquire runs when this node has taken a group (after the claim was verified).
	OnAcquire []string
	// OnRelease runs when this node lost or handed over a group it owned.
	OnRelease []string
	// OnMember runs when a peer joins, leaves, dies or changes health.
	OnMember []string
	// Timeout bounds one run of a hook; it is killed after that.
	Timeout time.Duration
}

// Handoff configures which advance notices of the instance's end, read from the instance
// metadata service, make the agent hand its groups over as on SIGTERM, before the instance
// goes away.
type Handoff struct {
	// SpotInterruption hands over on a spot interruption notice (two minutes' warning).
	SpotInterruption bool
	// Rebalance hands over on a rebalance recommendation (an elevated risk of interruption).
	Rebalance bool
	// ScheduledMaintenance hands over when a scheduled event (reboot, stop, retirement) is
	// due within MaintenanceLead.
	ScheduledMaintenance bool
	// MaintenanceLead is how long before a scheduled event's start the handover happens.
	MaintenanceLead time.Duration
	// ASGTerminated hands over when the Auto Scaling target lifecycle state becomes
	// Terminated.
	ASGTerminated bool
	// PollInterval is how often the metadata service is asked.
	PollInterval time.Duration
}

// defaultTelemetry, defaultHooks and defaultHandoff are what Default uses.
var (
	defaultTelemetry = Telemetry{}
	defaultHooks     = Hooks{Timeout: 30 * time.Second}
	defaultHandoff   = Handoff{
		SpotInterruption: true, ScheduledMaintenance: true, ASGTerminated: true,
		MaintenanceLead: 10 * time.Minute, PollInterval: 2 * time.Second,
	}
)

type telemetryBody struct {
	PrometheusListen *hcl.Attribute `hcl:"prometheus_listen,optional"`
	Rest             hcl.Body       `hcl:",remain"`
}

type hooksBody struct {
	OnAcquire *hcl.Attribute `hcl:"on_acquire,optional"`
	OnRelease *hcl.Attribute `hcl:"on_release,optional"`
	OnMember  *hcl.Attribute `hcl:"on_member,optional"`
	Timeout   *hcl.Attribute `hcl:"timeout,optional"`
	Rest      hcl.Body       `hcl:",remain"`
}

type handoffBody struct {
	SpotInterruption     *hcl.Attribute `hcl:"spot_interruption,optional"`
	Rebalance            *hcl.Attribute `hcl:"rebalance,optional"`
	ScheduledMaintenance *hcl.Attribute `hcl:"scheduled_maintenance,optional"`
	MaintenanceLead      *hcl.Attribute `hcl:"maintenance_lead,optional"`
	ASGTerminated        *hcl.Attribute `hcl:"asg_terminated,optional"`
	PollInterval         *hcl.Attribute `hcl:"poll_interval,optional"`
	Rest                 hcl.Body       `hcl:",remain"`
}

func (d *decoder) telemetry(block *hcl.Block) {
	var b telemetryBody
	s, ok := d.section(block, "telemetry", "telemetry", &b, &b.Rest)
	if !ok {
		return
	}
	s.str(b.PrometheusListen, &d.cfg.Telemetry.PrometheusListen)
}

func (d *decoder) hooks(block *hcl.Block) {
	var b hooksBody
	s, ok := d.section(block, "hooks", "hooks", &b, &b.Rest)
	if !ok {
		return
	}
	h := &d.cfg.Hooks
	s.strList(b.OnAcquire, &h.OnAcquire)
	s.strList(b.OnRelease, &h.OnRelease)
	s.strList(b.OnMember, &h.OnMember)
	s.duration(b.Timeout, &h.Timeout)
}

func (d *decoder) handoff(block *hcl.Block) {
	var b handoffBody
	s, ok := d.section(block, "handoff", "handoff", &b, &b.Rest)
	if !ok {
		return
	}
	h := &d.cfg.Handoff
	s.boolean(b.SpotInterruption, &h.SpotInterruption)
	s.boolean(b.Rebalance, &h.Rebalance)
	s.boolean(b.ScheduledMaintenance, &h.ScheduledMaintenance)
	s.duration(b.MaintenanceLead, &h.MaintenanceLead)
	s.boolean(b.ASGTerminated, &h.ASGTerminated)
	s.duration(b.PollInterval, &h.PollInterval)
}

func (v *checker) telemetry() {
	l := v.c.Telemetry.PrometheusListen
	if l == "" {
		return
	}
	ap, err := netip.ParseAddrPort(l)
	if err != nil || ap.Port() == 0 {
		v.fail(at("telemetry", "prometheus_listen"), `must be an IP address and port such as "127.0.0.1:9720" (got %q)`, l)
	}
}

func (v *checker) hooks() {
	h := &v.c.Hooks
	for _, c := range []struct {
		name string
		argv []string
	}{{"on_acquire", h.OnAcquire}, {"on_release", h.OnRelease}, {"on_member", h.OnMember}} {
		if len(c.argv) == 0 {
			continue
		}
		if !filepath.IsAbs(c.argv[0]) {
			v.fail(at("hooks", c.name), `must start with an absolute path to the program, e.g. ["/usr/local/bin/notify", "acquire"] (got %q)`, c.argv[0])
		}
	}
	if h.Timeout < time.Second || h.Timeout > 10*time.Minute {
		v.fail(at("hooks", "timeout"), "must be between 1s and 10m (got %s)", h.Timeout)
	}
}

func (v *checker) handoff() {
	h := &v.c.Handoff
	if h.PollInterval < 100*time.Millisecond || h.PollInterval > time.Minute {
		v.fail(at("handoff", "poll_interval"), "must be between 100ms and 1m (got %s); a spot notice gives two minutes", h.PollInterval)
	}
	if h.MaintenanceLead < time.Minute || h.MaintenanceLead > 24*time.Hour {
		v.fail(at("handoff", "maintenance_lead"), "must be between 1m and 24h (got %s)", h.MaintenanceLead)
	}
}
