package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/natganker/natganker/ec2"
)

// maxClaimBackoffShift caps the wait between failed claims at 1<<2 = 4 s: a takeover that
// waits for EC2 must follow soon after EC2 recovers (and a successful read clears the wait).
const maxClaimBackoffShift = 2

type claimResult struct {
	g       *groupState
	view    TakeoverView
	report  ec2.Report
	err     error
	from    string
	unseen  bool // from was not an alive member when the claim started
	started time.Time
}

// claim points the group at this node in the background, unless a claim is running or the
// last one failed too recently.
func (a *Agent) claim(g *groupState, reason string, now time.Time) {
	if g.claiming || now.Before(g.nextClaim) {
		return
	}
	g.claiming = true
	from := g.owner
	unseen := from != "" && from != a.id.InstanceID && (!a.isAlive(from) || a.confirmedDead(from, now))
	detected := a.detectedAt(g, now)
	view := TakeoverView{Group: g.cfg.Name, From: from, To: a.id.InstanceID, Reason: reason, Started: now, Detected: now.Sub(detected)}
	if from != a.id.InstanceID {
		if c := a.burst(from, now); c != nil && a.confirmedDead(from, now) {
			view.Confirmed = c.probe.Took
		}
	}
	spec := a.spec(g)
	g.beforeClaim = a.placement(g, g.obs)
	// Taking over from another instance is urgent: act on the last read and move
	// everything it lists at once; the claim itself reads back and fixes what that read
	// missed. Repairs read first and touch only what drifted.
	var known *ec2.Observation
	if from != a.id.InstanceID && g.observed && g.obsErr == nil {
		obs := g.obs
		known = &obs
	}
	if from != a.id.InstanceID && from != "" && a.flows != nil {
		// The former owner's connections are installed while EC2 moves the traffic here.
		a.tellTakeover(from)
		old, own := a.flowAddresses(g)
		a.spawn(func() { a.installFlows(from, old, own) })
	}
	ctx, cancel := context.WithTimeout(a.ctx, 6*a.cfg.EC2.CallTimeout)
	g.claimCancel = cancel
	a.spawn(func() {
		defer cancel()
		rep, err := a.deps.Cloud.Claim(ctx, spec, a.self, known)
		if err == nil {
			err = rep.Err()
		}
		select {
		case a.claimed <- claimResult{g: g, view: view, report: rep, err: err, from: from, unseen: unseen, started: now}:
		case <-a.ctx.Done():
		}
	})
}

// detectedAt is when the reason for the current verdict began: for an owner that went
// silent, its last sign of life (an ack or an alive message), else when this node first
// reached the verdict.
func (a *Agent) detectedAt(g *groupState, now time.Time) time.Time {
	t := g.trigger
	if t.IsZero() {
		t = now
	}
	if g.owner != "" && g.owner != a.id.InstanceID && !g.force {
		if last := a.gossip.LastContact(g.owner); !last.IsZero() && last.Before(t) && (!a.isAlive(g.owner) || a.confirmedDead(g.owner, now)) {
			t = last
		}
	}
	return t
}

// abandonClaims cancels the claims in progress of a node that may no longer own: it became
// unhealthy, it is shutting down, or the group was yielded. A claim left to run would move the
// group back to a node that gave it up: in a chaos run, a failback slowed by throttling
// finished its second round after the node's public interface had gone down and the peer had
// taken over, and the group went back and forth. Cancelling may leave the Elastic IP and the
// routes on different instances, which the desired owner repairs (a split), never on none.
func (a *Agent) abandonClaims() {
	healthy, reason := a.healthy()
	for _, g := range a.groups {
		if !g.claiming || g.claimCancel == nil || g.abandoned != "" {
			continue
		}
		switch {
		case !healthy:
			g.abandoned = "this node is unhealthy: " + reason
		case a.leave != nil:
			g.abandoned = "this node is shutting down"
		case g.yielded:
			g.abandoned = "the group was yielded"
		default:
			continue
		}
		a.logger.Warn("abandoning the claim in progress", "group", g.cfg.Name, "why", g.abandoned)
		g.claimCancel()
	}
}

func (a *Agent) onClaimed(r claimResult) {
	g := r.g
	g.claiming, g.force = false, false
	g.claimCancel = nil
	if why := g.abandoned; why != "" {
		g.abandoned = ""
		a.logger.Info("claim abandoned", "group", g.cfg.Name, "why", why, "error", r.err)
		a.finishWaiters(g, fmt.Errorf("claim abandoned: %s", why))
		a.observe(g)
		return
	}
	v := r.view
	v.EIPMoved, v.RoutesMoved, v.Verified = r.report.EIPDone, r.report.RoutesDone, r.report.Verified
	args := []any{
		"group", v.Group, "from", orNone(v.From), "to", v.To, "reason", v.Reason,
		"detected_at", r.started.Add(-v.Detected).UTC().Format(time.RFC3339Nano),
		"detected_ms", v.Detected.Milliseconds(), "confirmed_ms", v.Confirmed.Milliseconds(),
		"eip_ms", v.EIPMoved.Milliseconds(), "routes_ms", v.RoutesMoved.Milliseconds(),
		"verified_ms", v.Verified.Milliseconds(), "routes", len(r.report.Routes),
	}
	if r.err != nil {
		v.Error = r.err.Error()
		g.failures++
		backoff := time.Duration(1<<min(g.failures-1, maxClaimBackoffShift)) * time.Second
		g.nextClaim = time.Now().Add(backoff)
		a.logger.Error("takeover failed; will retry", append(args, "error", r.err, "retry_in", backoff.String())...)
	} else {
		g.failures = 0
		if r.from != a.id.InstanceID || r.report.EIP.Action == ec2.ActionAssociated {
			a.logger.Info("takeover", args...)
		} else {
			a.logger.Info("repaired", args...)
		}
		if g.owner != a.id.InstanceID {
			g.owner, g.ownerAt = a.id.InstanceID, time.Now()
		}
		g.claimedAt = time.Now()
		a.setDisplaced(g, "")
		if r.from != a.id.InstanceID {
			g.tookFrom = ""
			if r.unseen {
				g.tookFrom = r.from
			}
		}
	}
	if r.from != a.id.InstanceID || r.err != nil || r.report.EIP.Action == ec2.ActionAssociated {
		g.last = &v
	}
	a.claimFinished(r, v)
	a.finishWaiters(g, r.err)
	a.observe(g)
}

func (a *Agent) finishWaiters(g *groupState, err error) {
	for _, w := range g.waiters {
		w <- err
	}
	g.waiters = nil
}
