package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/sdnotify"
)

// Running under systemd (packaging/natganker-agent.service: Type=notify, WatchdogSec=10s,
// ExecReload=/bin/kill -HUP $MAINPID): the agent reports READY=1, STATUS= and watchdog pings
// from its run loop (agent/supervise.go), STOPPING=1 when it shuts down, and RELOADING=1 then
// READY=1 around a reload on SIGHUP.

// supervisor returns the service manager's notifier, from the environment systemd sets; it
// sends nothing when the agent does not run under systemd.
func (c *RunCommand) supervisor(logger hclog.Logger) *sdnotify.Notifier {
	if c.sd != nil {
		return c.sd
	}
	n, err := sdnotify.FromEnv()
	if err != nil {
		logger.Warn("ignoring part of the service manager's environment", "error", err)
	}
	if n.Enabled() {
		logger.Info("running under a service manager", "watchdog", n.WatchdogTimeout().String())
	}
	return n
}

// hangups returns the channel SIGHUP arrives on, and the function that stops it.
func (c *RunCommand) hangups() (<-chan os.Signal, func()) {
	if c.hup != nil {
		return c.hup, func() {}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}

// reload reads the configuration file again and hands it to the agent, which applies what
// can change while it runs and names the settings that need a restart. An invalid file
// changes nothing.
func (c *RunCommand) reload(ctx context.Context, a *agent.Agent, sd *sdnotify.Notifier, logger hclog.Logger) {
	logger.Info("SIGHUP: reloading the configuration", "config", c.config)
	notify := func(state string) {
		if err := sd.Notify(state); err != nil {
			logger.Warn("could not notify the service manager", "error", err)
		}
	}
	notify(sdnotify.ReloadingNow())
	defer notify(sdnotify.Ready)
	cfg, err := config.Load(c.config)
	if err != nil {
		logger.Error("reload refused: the configuration is invalid; the agent keeps running with the one it has", "error", err)
		return
	}
	if _, err := a.Reload(ctx, cfg); err != nil {
		logger.Error("reload failed", "error", err)
	}
}
