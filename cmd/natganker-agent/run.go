package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/conntrack"
	"github.com/natganker/natganker/agent/control"
	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/sdnotify"
)

// RunCommand runs the agent until it is told to stop.
type RunCommand struct {
	stdout, stderr io.Writer

	// signals delivers SIGINT and SIGTERM; nil subscribes to the process's signals.
	signals <-chan os.Signal
	// exit ends the process when a second signal arrives during shutdown; nil is os.Exit.
	exit func(code int)
	// hup delivers SIGHUP (reload.go); nil subscribes to the process's.
	hup <-chan os.Signal
	// sd is the service manager's notifier; nil reads it from the environment.
	sd *sdnotify.Notifier

	config string
}

// Synopsis returns a one-line description.
func (c *RunCommand) Synopsis() string { return "run the agent (as a service, usually under systemd)" }

// Usage returns the help text.
func (c *RunCommand) Usage() string {
	return `Usage: ` + progName + ` run [-config FILE]

Runs the agent in the foreground: reads the configuration, checks this host, asks the
instance metadata service who this instance is, disables the instance's source/destination
check, joins the other agents, checks (and, when datapath.manage is set, sets up) forwarding
and masquerading, and from then on keeps each group's Elastic IP and routes on the healthy
agent with the highest priority. The control socket named in the configuration
(control.socket) serves the members, status, yield, resume and takeover commands.

Before it asks or joins anyone, run claims the control socket and checks this host, so that
a second agent started by mistake never joins the cluster under the first one's name:
  - the control socket is not served by a running agent (a socket left behind by an agent
    that died is taken over) and its directory can be created;
  - the directory of control.state_file can be created and written;
  - gossip.bind (address and port) is free for both TCP and UDP;
  - when datapath.manage is set, datapath.public_interface exists.
A problem with the control socket is reported alone; the other checks report every problem
at once. Either way run exits 1 without having asked or joined anyone.

Logs go to standard error: text on a terminal, JSON otherwise, unless log.format says.
A gossip key that users other than its owner can read or write is logged once at start as
a warning, with the chmod that fixes it.

SIGHUP reloads the configuration file: each group's priority, failback and failback_delay,
log.level and the hooks take their new values at once; every other setting that changed is
named in a warning and keeps its running value until a restart. An invalid file changes
nothing. Under systemd (Type=notify) the agent reports READY=1 once gossip is up and EC2
was read, its owned groups as STATUS=, STOPPING=1 when it stops, and, with WatchdogSec=,
watchdog pings sent by its run loop.

The agent watches the instance metadata for notices of the instance's end (handoff block:
spot interruption, scheduled maintenance, Auto Scaling termination, and rebalance
recommendations when enabled). On one it hands its groups over as on SIGTERM but keeps
running, leaving: it never takes a group back until it is restarted.

SIGTERM or SIGINT stops the agent gracefully: it stops serving the control socket,
hands the groups it owns to the next agent, leaves the cluster, removes the control socket
and exits 0. A second signal during that shutdown exits at once with status 1.

Flags:
  -config FILE   configuration file (default ` + defaultConfig + `)

Exit status: 0 stopped by a signal (during start-up too); 1 failure to start or to stop:
a bad configuration, a failed check of this host (above), no answer from the instance
metadata service when the node block does not give the identity, the gossip port taken
between the check and its use, or a shutdown that failed or was cut short by a second
signal; 2 usage error. Peers that do not answer, failing EC2 calls and an unhealthy
datapath do not stop the agent: it keeps running, logs them and acts once they clear.
`
}

// flags binds the command's flags to its fields.
func (c *RunCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&c.config, "config", defaultConfig, "")
	return fs
}

// Run executes the command.
func (c *RunCommand) Run(ctx context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	tuneMemProfile() // memory.go
	cfg, err := config.Load(c.config)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	tuneGC() // memory.go
	logger, err := newLogger(cfg.Log, c.stderr)
	if err != nil {
		return err
	}
	for _, w := range config.KeyFileWarnings(cfg) {
		logger.Warn("the gossip key file is open to other users: whoever reads the key can forge gossip and trigger failovers",
			"setting", w.Setting, "path", w.Path, "mode", fmt.Sprintf("%04o", uint32(w.Mode)), "fix", w.Fix())
	}

	sigc := c.signals
	if sigc == nil {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(ch)
		sigc = ch
	}
	exit := c.exit
	if exit == nil {
		exit = os.Exit
	}
	hup, stopHup := c.hangups()
	defer stopHup()
	c.sd = c.supervisor(logger)

	logger.Info("starting", "version", version, "config", c.config)
	ln, err := preflight(cfg)
	if err != nil {
		return err
	}

	// The agent lives on this context until after its graceful Close; start-up steps use a
	// child that a signal cancels, so a stuck metadata service cannot block a stop.
	life, cancelLife := context.WithCancel(ctx)
	defer cancelLife()
	startCtx, cancelStart := context.WithCancel(life)
	defer cancelStart()
	startDone := make(chan struct{})
	interrupted := make(chan os.Signal, 1)
	go func() {
		select {
		case s := <-sigc:
			logger.Info("signal received during start-up, stopping", "signal", s)
			cancelStart()
			interrupted <- s
		case <-startDone:
		}
	}()

	a, srv, err := c.start(startCtx, life, cfg, ln, logger)
	close(startDone)
	if err != nil {
		if cerr := ln.Close(); cerr != nil {
			logger.Error("release control socket", "error", cerr)
		}
		if startCtx.Err() != nil {
			// Interrupted: the error is only the consequence of the stop that was asked for.
			logger.Info("stopped before start-up completed", "error", err)
			return nil
		}
		return err
	}

	prof := startProfiling(logger) // only when NATGANKER_PPROF is set (pprof.go)
	defer prof.stop()
	for stop := false; !stop; {
		select {
		case s := <-sigc:
			logger.Info("signal received, shutting down", "signal", s)
			stop = true
		case s := <-interrupted:
			logger.Info("signal received, shutting down", "signal", s)
			stop = true
		case <-ctx.Done():
			logger.Info("shutting down", "reason", ctx.Err())
			stop = true
		case <-hup:
			c.reload(life, a, c.sd, logger)
		}
	}

	prof.stop()
	return shutdown(logger, sigc, exit,
		step{"close control socket", srv.Close},
		step{"stop agent", a.Close}, // hands owned groups over first
		// Only now, out of the cluster, may another agent claim the socket and join.
		step{"release control socket", ln.Close},
	)
}

// step is one part of the shutdown.
type step struct {
	name string
	run  func() error
}

// shutdown runs the steps in order and logs "stopped". A signal arriving meanwhile means the
// operator does not want to wait for the handover: exit is called at once with status 1.
func shutdown(logger hclog.Logger, sigc <-chan os.Signal, exit func(int), steps ...step) error {
	stopped := make(chan struct{})
	watched := make(chan struct{})
	defer func() {
		close(stopped)
		<-watched
	}()
	go func() {
		defer close(watched)
		select {
		case s := <-sigc:
			logger.Warn("second signal received, exiting without finishing the shutdown", "signal", s)
			exit(exitFailure)
		case <-stopped:
		}
	}()

	var errs []error
	for _, st := range steps {
		if err := st.run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		logger.Error("stopped with errors", "error", err)
		return err
	}
	logger.Info("stopped")
	return nil
}

// start builds and starts everything, and serves the control socket ln, claimed by preflight,
// once the agent exists. When the socket cannot be served, the agent that was started is
// stopped again. The caller releases ln when start fails.
func (c *RunCommand) start(ctx, life context.Context, cfg *config.Config, ln *control.Listener, logger hclog.Logger) (*agent.Agent, *control.Server, error) {
	id, err := ec2.LoadIdentity(ctx, cfg.Node.IMDSEndpoint, identityOverride(cfg.Node))
	if err != nil {
		return nil, nil, fmt.Errorf("identify this instance: %w", err)
	}
	logger.Info("identity", "instance", id.InstanceID, "region", id.Region, "zone", id.AvailabilityZone,
		"local_ipv4", id.LocalIPv4, "vpc_cidr", id.VPCCIDR)
	region := cfg.EC2.Region
	if region == "" {
		region = id.Region
	}
	watch := newWatchers(cfg, id.InstanceID, logger)
	cloud, err := ec2.New(ctx, ec2.Options{
		Region:         region,
		Endpoint:       cfg.EC2.Endpoint,
		MaxConcurrency: cfg.EC2.MaxConcurrency,
		CallTimeout:    cfg.EC2.CallTimeout,
		Logger:         logger,
		Observer:       watch.ec2Observer(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("set up ec2 client: %w", err)
	}
	deps := agent.Deps{Cloud: cloud, Version: version, Events: watch.sinks}
	deps.Hooks, deps.Supervisor, deps.Notices = watch.hooks, c.sd, ec2.NewNoticeReader(cfg.Node.IMDSEndpoint)
	if dp := cfg.Datapath; dp.Manage || dp.EgressProbe != "" || dp.PublicInterface != "" {
		if dp.MasqueradeSource == "" {
			dp.MasqueradeSource = id.VPCCIDR
		}
		d, err := datapath.New(datapath.Config{
			Manage:             dp.Manage,
			PublicInterface:    dp.PublicInterface,
			MasqueradeSource:   dp.MasqueradeSource,
			EgressProbe:        dp.EgressProbe,
			EgressProbeTimeout: dp.EgressProbeTimeout,
		}, logger)
		if err != nil {
			return nil, nil, fmt.Errorf("set up datapath: %w", err)
		}
		deps.Health = d
	}
	if cfg.ConntrackSync.Enabled {
		deps.Flows = &conntrack.Kernel{PublicInterface: cfg.Datapath.PublicInterface}
	}
	a, err := agent.New(cfg, id, deps, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("set up agent: %w", err)
	}
	if err := a.Start(life); err != nil {
		// Not Close: it hands groups over through the run loop, which never started.
		return nil, nil, fmt.Errorf("start agent: %w", err)
	}
	srv := control.NewServerOn(a, ln, logger)
	if err := srv.Start(life); err != nil {
		if cerr := a.Close(); cerr != nil {
			logger.Error("stop agent", "error", cerr)
		}
		return nil, nil, fmt.Errorf("start control socket: %w", err)
	}
	logger.Info("running", "node", id.InstanceID, "socket", cfg.Control.Socket)
	return a, srv, nil
}

// newLogger builds the agent's logger from the log block. Format "auto" writes text when w is
// a terminal and JSON otherwise, so that journald and log shippers get structured records.
func newLogger(l config.Log, w io.Writer) (hclog.Logger, error) {
	level := hclog.LevelFromString(l.Level)
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("log.level: unknown level %q", l.Level)
	}
	var asJSON bool
	switch l.Format {
	case "json":
		asJSON = true
	case "text":
	case "auto", "":
		asJSON = !isTerminal(w)
	default:
		return nil, fmt.Errorf("log.format: unknown format %q", l.Format)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "natganker",
		Level:      level,
		Output:     w,
		JSONFormat: asJSON,
	}), nil
}

// isTerminal reports whether w is a terminal. A character device is not enough: /dev/null is
// one too.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
