package agent

import (
	"context"
	"time"

	"github.com/natganker/natganker/agent/datapath"
)

// healthyChecksToRecover consecutive good checks make an unhealthy node healthy again, so
// that a node repairing itself stays out long enough for a peer to take over.
const healthyChecksToRecover = 3

// healthState is this node's datapath health as the run loop knows it, and its own instance
// state as EC2 last reported it.
type healthState struct {
	healthy    bool
	reason     string
	goodChecks int
	checking   bool
	// ec2State is this instance's state in EC2 when it is not one that forwards traffic
	// (stopping, stopped…), "" otherwise.
	ec2State string
	// perms is each group's dry-run permission check (permissions.go).
	perms map[string]*permState
}

// healthy reports whether this node may own groups, and why not: its datapath works, EC2
// does not report its instance stopped, and no call a takeover needs is denied.
func (a *Agent) healthy() (bool, string) {
	switch {
	case !a.health.healthy:
		return false, a.health.reason
	case a.health.ec2State != "":
		return false, "EC2 reports this instance " + a.health.ec2State
	}
	if p := a.permissionProblem(); p != "" {
		return false, p
	}
	return true, ""
}

// noteSelfState records this instance's state from an EC2 read.
func (a *Agent) noteSelfState(state string) {
	if running(state) {
		state = ""
	}
	if state == a.health.ec2State {
		return
	}
	if state != "" {
		a.logger.Warn("EC2 reports this instance not running: it gives up its groups", "state", state)
	} else {
		a.logger.Info("EC2 reports this instance running again")
		now := time.Now()
		for _, g := range a.groups {
			g.eligibleSince = now
		}
	}
	a.health.ec2State = state
}

// checkAtStart sets the datapath up when the agent manages it and checks it once, so that an
// unhealthy node never claims anything, not even before its first periodic check.
func (a *Agent) checkAtStart(ctx context.Context) {
	if a.deps.Health == nil {
		return
	}
	if r, ok := a.deps.Health.(Repairer); ok && a.cfg.Datapath.Manage {
		if err := r.Ensure(ctx); err != nil {
			a.logger.Error("could not set up the datapath", "error", err)
		}
	}
	h := a.deps.Health.Check(ctx)
	a.health.healthy, a.health.reason = h.Healthy, h.Reason
	if !h.Healthy {
		a.logger.Warn("datapath unhealthy at start: this node will not own groups", "reason", h.Reason)
	}
}

// check runs a datapath health check in the background; when the datapath is managed and
// the last check failed, it is repaired first, and when the check finds the table only
// stale (the wanted rules changed), it is brought up to date and checked again.
func (a *Agent) check() {
	if a.deps.Health == nil || a.health.checking {
		return
	}
	a.health.checking = true
	repair := !a.health.healthy || a.health.goodChecks < healthyChecksToRecover
	a.spawn(func() {
		ctx, cancel := context.WithTimeout(a.ctx, 2*time.Second)
		defer cancel()
		if r, ok := a.deps.Health.(Repairer); ok && a.cfg.Datapath.Manage && repair {
			if err := r.Ensure(ctx); err != nil && ctx.Err() == nil {
				a.logger.Error("could not repair the datapath", "error", err)
			}
		}
		h := a.deps.Health.Check(ctx)
		if r, ok := a.deps.Health.(Repairer); ok && a.cfg.Datapath.Manage && h.Stale && ctx.Err() == nil {
			// The wanted rules changed (source NAT, addresses.go): bring the table up to date.
			if err := r.Ensure(ctx); err != nil && ctx.Err() == nil {
				a.logger.Error("could not update the datapath", "error", err)
			}
			h = a.deps.Health.Check(ctx)
		}
		select {
		case a.checked <- h:
		case <-a.ctx.Done():
		}
	})
}

func (a *Agent) onChecked(h datapath.Health) {
	s := &a.health
	s.checking = false
	if !h.Healthy {
		if s.healthy {
			a.logger.Warn("datapath unhealthy: this node gives up its groups", "reason", h.Reason)
		}
		s.healthy, s.reason, s.goodChecks = false, h.Reason, 0
		return
	}
	s.goodChecks++
	if !s.healthy && s.goodChecks >= healthyChecksToRecover {
		a.logger.Info("datapath healthy again")
		s.healthy, s.reason = true, ""
		now := time.Now()
		for _, g := range a.groups {
			g.eligibleSince = now
		}
	}
}

// disableSourceDestCheck lets this instance forward others' traffic; it retries until EC2
// agrees, because a NAT with the check on silently drops everything it should forward.
func (a *Agent) disableSourceDestCheck(ctx context.Context) {
	delay := time.Second
	for {
		cctx, cancel := context.WithTimeout(ctx, a.ec2Budget())
		err := a.deps.Cloud.DisableSourceDestCheck(cctx, a.id.InstanceID)
		cancel()
		if err == nil {
			a.logger.Debug("source/destination check is off", "instance", a.id.InstanceID)
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.logger.Error("could not turn off the source/destination check; retrying", "error", err, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}
