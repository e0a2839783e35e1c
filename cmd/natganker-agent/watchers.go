package main

import (
	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/telemetry"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// watchers are what the configuration asks to watch the agent: the Prometheus endpoint
// (telemetry.prometheus_listen) and the event hooks (hooks). The agent starts them before it
// joins the cluster and closes them after it stopped.
type watchers struct {
	exporter *telemetry.Exporter
	// hooks runs the hooks; a reload gives it new ones.
	hooks *agent.HookRunner
	sinks []agent.EventSink
}

func newWatchers(cfg *config.Config, node string, logger hclog.Logger) *watchers {
	w := &watchers{}
	var observer agent.HookObserver
	if cfg.Telemetry.PrometheusListen != "" {
		var groups []string
		for _, g := range cfg.Groups {
			groups = append(groups, g.Name)
		}
		w.exporter = telemetry.New(telemetry.Options{Listen: cfg.Telemetry.PrometheusListen, Groups: groups, Version: version, Logger: logger})
		w.sinks = append(w.sinks, w.exporter)
		observer = w.exporter
	}
	// Always a runner, even with no hook configured, so that a reload can add hooks.
	w.hooks = agent.NewHookRunner(cfg.Hooks, node, observer, logger)
	w.sinks = append(w.sinks, w.hooks)
	return w
}

// ec2Observer is what counts EC2 calls, nil without metrics.
func (w *watchers) ec2Observer() ec2.CallObserver {
	if w.exporter == nil {
		return nil
	}
	return w.exporter
}
