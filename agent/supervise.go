package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/natganker/natganker/gossip"
	"github.com/natganker/natganker/sdnotify"
)

// The service manager (systemd, Type=notify) is told from the run loop: READY=1 once gossip
// is up and every group's first read of EC2 has finished, STATUS= whenever what this node
// owns changes, WATCHDOG=1 pings from the loop itself (a wedged loop stops them and systemd
// restarts the agent), STOPPING=1 when Close begins.

var _ Supervisor = (*sdnotify.Notifier)(nil)

// Supervisor is the service manager the agent reports to.
type Supervisor interface {
	// Notify sends one message of newline-separated VAR=value assignments.
	Notify(state string) error
	// WatchdogInterval is how often the run loop must ping; 0 when nothing watches.
	WatchdogInterval() time.Duration
}

// supervised is the run loop's record of what the service manager was told.
type supervised struct {
	ready  bool
	status string
	// failed is the last error from the service manager's socket, logged once.
	failed string
}

// notify sends state to the service manager, if there is one. Failures are logged once:
// the agent does its job whether or not systemd hears of it.
func (a *Agent) notify(state string) {
	if a.deps.Supervisor == nil {
		return
	}
	err := a.deps.Supervisor.Notify(state)
	switch {
	case err != nil && err.Error() != a.sd.failed:
		a.logger.Warn("could not notify the service manager", "error", err)
		a.sd.failed = err.Error()
	case err == nil:
		a.sd.failed = ""
	}
}

// notifyStopping tells the service manager the agent is stopping. Close calls it, outside
// the run loop, so it touches none of the loop's state.
func (a *Agent) notifyStopping() {
	if a.deps.Supervisor == nil {
		return
	}
	if err := a.deps.Supervisor.Notify(sdnotify.Stopping + "\n" + sdnotify.Status("stopping: handing the groups over")); err != nil {
		a.logger.Warn("could not notify the service manager", "error", err)
	}
}

// watchdogTick returns the run loop's watchdog ticker channel (nil, never ready, when no
// watchdog is wanted) and its stop function.
func (a *Agent) watchdogTick() (<-chan time.Time, func()) {
	if a.deps.Supervisor == nil {
		return nil, func() {}
	}
	d := a.deps.Supervisor.WatchdogInterval()
	if d <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// report tells the service manager that the agent is ready, once, and its status when it
// changed; the run loop calls it after every decision round.
func (a *Agent) report() {
	if a.deps.Supervisor == nil {
		return
	}
	var msgs []string
	if !a.sd.ready {
		for _, g := range a.groups {
			if !g.observed && g.obsErr == nil {
				return
			}
		}
		a.sd.ready = true
		msgs = append(msgs, sdnotify.Ready)
	}
	if s := a.statusLine(); s != a.sd.status {
		a.sd.status = s
		msgs = append(msgs, sdnotify.Status(s))
	}
	if len(msgs) > 0 {
		a.notify(strings.Join(msgs, "\n"))
	}
}

// statusLine is the one line systemctl status shows: what this node owns and stands by for,
// how many peers are alive, and why it is leaving or cannot read EC2.
func (a *Agent) statusLine() string {
	var owns, standby, unread []string
	for _, g := range a.groups {
		switch {
		case g.owner == a.id.InstanceID:
			owns = append(owns, g.cfg.Name)
		case g.owner != "":
			standby = append(standby, fmt.Sprintf("%s (owner %s)", g.cfg.Name, g.owner))
		default:
			standby = append(standby, g.cfg.Name)
		}
		if g.obsErr != nil {
			unread = append(unread, g.cfg.Name)
		}
	}
	var parts []string
	if why := a.leavingReason(); why != "" {
		parts = append(parts, "leaving ("+why+")")
		standby = nil
	}
	if len(owns) > 0 {
		parts = append(parts, "owns "+strings.Join(owns, ", "))
	} else {
		parts = append(parts, "owns no group")
	}
	if len(standby) > 0 {
		parts = append(parts, "standby for "+strings.Join(standby, ", "))
	}
	alive := 0
	for _, m := range a.members {
		if m.State == gossip.StateAlive {
			alive++
		}
	}
	parts = append(parts, fmt.Sprintf("peers alive: %d", alive))
	if len(unread) > 0 {
		parts = append(parts, "EC2 unreadable for "+strings.Join(unread, ", "))
	}
	return strings.Join(parts, "; ")
}
