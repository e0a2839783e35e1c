package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// A planned handoff: EC2 warns, through the instance metadata service, of an instance's end
// (a spot interruption, a rebalance recommendation, scheduled maintenance, an Auto Scaling
// termination). The agent polls for these notices and, on one the handoff block enables,
// hands its groups over exactly as on SIGTERM (handover.go), but stays up: an agent that
// exited would be started again by systemd and take the groups back. From then on this node
// is leaving for good: it advertises every group as yielded and itself as leaving, never
// claims again, and refuses resume and takeover; only a restart of the agent on an instance
// that no longer has the notice makes it an ordinary member again.

var _ NoticeSource = (*ec2.NoticeReader)(nil)

// NoticeSource reads the instance metadata service's notices of the instance's end.
type NoticeSource interface {
	// ReadNotices returns what the service announces now. An error wrapping
	// ec2.ErrMetadataUnreachable means the service did not answer at all.
	ReadNotices(ctx context.Context) (ec2.Notices, error)
}

// notice is an announcement of this instance's end that calls for a handover.
type notice struct {
	// kind names it for people: "spot interruption notice", …
	kind string
	// args are the log's key/value pairs describing it.
	args []any
}

// Names of the notice kinds, as logged and shown in the service status.
const (
	noticeSpot        = "spot interruption notice"
	noticeRebalance   = "rebalance recommendation"
	noticeMaintenance = "scheduled maintenance"
	noticeASG         = "Auto Scaling termination"
)

// noticeDue returns the first notice in n that h says to hand over on at now: a spot
// interruption, a rebalance recommendation, a scheduled event (not completed or canceled)
// starting within h.MaintenanceLead (or already started), or the Auto Scaling target
// lifecycle state Terminated.
func noticeDue(n ec2.Notices, h config.Handoff, now time.Time) (notice, bool) {
	if h.SpotInterruption && n.Spot != nil {
		return notice{kind: noticeSpot, args: []any{"action", n.Spot.Action, "at", n.Spot.Time.UTC().Format(time.RFC3339)}}, true
	}
	if h.ASGTerminated && n.LifecycleState == ec2.LifecycleTerminated {
		return notice{kind: noticeASG, args: []any{"lifecycle_state", n.LifecycleState}}, true
	}
	if h.ScheduledMaintenance {
		for _, e := range n.Maintenance {
			if e.State != "" && e.State != "active" {
				continue
			}
			if e.NotBefore.Sub(now) <= h.MaintenanceLead {
				return notice{kind: noticeMaintenance, args: []any{"event", e.EventID, "code", e.Code,
					"not_before", e.NotBefore.UTC().Format(time.RFC3339), "lead", h.MaintenanceLead.String()}}, true
			}
		}
	}
	if h.Rebalance && !n.Rebalance.IsZero() {
		return notice{kind: noticeRebalance, args: []any{"notice_time", n.Rebalance.UTC().Format(time.RFC3339)}}, true
	}
	return notice{}, false
}

// watchesNotices reports whether h enables any kind of notice.
func watchesNotices(h config.Handoff) bool {
	return h.SpotInterruption || h.Rebalance || h.ScheduledMaintenance || h.ASGTerminated
}

// watchNotices polls src every h.PollInterval until a notice is due, then has the run loop
// hand the groups over, and returns. A metadata service that cannot be read is logged once
// (and once more when it answers again); polling goes on.
func (a *Agent) watchNotices(ctx context.Context, src NoticeSource, h config.Handoff) {
	log := a.logger.Named("handoff")
	tick := time.NewTicker(h.PollInterval)
	defer tick.Stop()
	var failing string
	for {
		n, err := src.ReadNotices(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && errors.Is(err, ec2.ErrMetadataUnreachable):
			if failing != "unreachable" {
				log.Warn("instance metadata unreachable: notices of this instance's end cannot be seen until it answers; polling on",
					"error", err, "every", h.PollInterval.String())
			}
			failing = "unreachable"
		case err != nil:
			if failing != err.Error() {
				log.Warn("could not read a notice from the instance metadata; polling on", "error", err)
			}
			failing = err.Error()
		case failing != "":
			log.Info("instance metadata readable again")
			failing = ""
		}
		if nt, ok := noticeDue(n, h, time.Now()); ok {
			if err := a.do(ctx, func() { a.onNotice(nt) }); err != nil && ctx.Err() == nil {
				log.Error("could not act on the notice", "notice", nt.kind, "error", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// onNotice begins the planned handoff; it runs on the run goroutine.
func (a *Agent) onNotice(n notice) {
	if a.leave != nil {
		a.logger.Info(n.kind+" received while already leaving", n.args...)
		return
	}
	args := append([]any{"notice", n.kind}, n.args...)
	args = append(args, "groups", a.ownedGroups())
	a.logger.Warn(n.kind+": this instance is going away; handing the groups over now and never taking them back", args...)
	for _, g := range a.groups {
		g.yielded = true
	}
	a.beginHandover(make(chan struct{}))
	a.leave.notice = n.kind
}

// leavingReason says why this node is leaving, "" when it is not.
func (a *Agent) leavingReason() string {
	switch {
	case a.leave == nil:
		return ""
	case a.leave.notice != "":
		return a.leave.notice
	default:
		return "shutting down"
	}
}

// errLeaving answers resume while this node is leaving on a notice.
func (a *Agent) errLeaving() error {
	return fmt.Errorf("this node is leaving (%s): it does not take groups back; restart the agent to make it a member again", a.leavingReason())
}
