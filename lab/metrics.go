package lab

import (
	"context"
	"fmt"
	"net"

	"github.com/natganker/natganker/agent/telemetry"
)

// MetricsPort is where each agent serves its Prometheus metrics when Options.Metrics is set,
// on its private address.
const MetricsPort = 9720

// MetricsURL is the /metrics address of the agent on a NAT host, reachable from the root
// namespace (the private segment's bridge has a port there).
func MetricsURL(host string) string {
	return "http://" + net.JoinHostPort(natIP(host), fmt.Sprint(MetricsPort)) + "/metrics"
}

// metricsConfig is the telemetry block added to an agent's configuration, or "".
func (l *Lab) metricsConfig(host string) string {
	if !l.opts.Metrics {
		return ""
	}
	return fmt.Sprintf("\ntelemetry {\n  prometheus_listen = %q\n}\n", net.JoinHostPort(natIP(host), fmt.Sprint(MetricsPort)))
}

// syncConfig is the conntrack_sync block added to an agent's configuration, or "".
func (l *Lab) syncConfig() string {
	if !l.opts.NoConntrackSync {
		return ""
	}
	return "\nconntrack_sync {\n  enabled = false\n}\n"
}

// Scrape reads the metrics of the agent on host.
func (l *Lab) Scrape(ctx context.Context, host string) (telemetry.Scrape, error) {
	return telemetry.Get(ctx, MetricsURL(host))
}
