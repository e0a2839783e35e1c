package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/natganker/natganker/ec2"
)

// A node whose instance profile lacks a permission a takeover needs would find out at the
// worst moment: the Elastic IP moved, every route refused. The agent dry-runs a takeover's
// calls (ec2.Client.CheckPermissions) after its first read of each group and every
// permissionsEvery after that; while one is denied the node is unhealthy (it owns nothing, and
// says why in members and the log), and it checks again every permissionsRetry so that a
// fixed profile is noticed soon.
var (
	permissionsEvery = 15 * time.Minute
	permissionsRetry = time.Minute // a variable so that tests can shorten it
)

// PermissionChecker dry-runs the calls a takeover would make. *ec2.Client implements it.
type PermissionChecker interface {
	CheckPermissions(ctx context.Context, g ec2.Group, self ec2.Self, obs ec2.Observation) (ec2.Permissions, error)
}

var _ PermissionChecker = (*ec2.Client)(nil)

// permState is what the run loop knows of one group's permissions.
type permState struct {
	checking bool
	next     time.Time
	denied   []ec2.PermissionCheck
	// said remembers the last outcome logged, so that each is logged once.
	said string
}

// checkPermissions dry-runs group g's takeover calls in the background when one is due.
func (a *Agent) checkPermissions(g *groupState, obs ec2.Observation) {
	pc, ok := a.deps.Cloud.(PermissionChecker)
	if !ok {
		return
	}
	if a.health.perms == nil {
		a.health.perms = make(map[string]*permState)
	}
	st := a.health.perms[g.cfg.Name]
	if st == nil {
		st = &permState{}
		a.health.perms[g.cfg.Name] = st
	}
	if st.checking || time.Now().Before(st.next) {
		return
	}
	st.checking = true
	spec, name := a.spec(g), g.cfg.Name
	// Dry runs yield to every other mutating call: they take a token of EC2's rate limit
	// only from a full bucket, so two per route table cost 0.4 s of refill each.
	budget := 2*a.ec2Budget() + time.Duration(len(obs.Routes))*400*time.Millisecond
	a.spawn(func() {
		ctx, cancel := context.WithTimeout(a.ctx, budget)
		defer cancel()
		p, err := pc.CheckPermissions(ctx, spec, a.self, obs)
		_ = a.do(a.ctx, func() { a.onPermissions(name, p, err) })
	})
}

// onPermissions records the outcome of a group's dry runs.
func (a *Agent) onPermissions(group string, p ec2.Permissions, err error) {
	st := a.health.perms[group]
	st.checking = false
	now := time.Now()
	say := func(what string, log func(string, ...any), msg string, args ...any) {
		if st.said != what {
			st.said = what
			log(msg, append([]any{"group", group}, args...)...)
		}
	}
	switch {
	case err != nil:
		// Nothing learnt: keep what the last check found.
		st.next = now.Add(permissionsRetry)
		a.logger.Debug("could not check EC2 permissions; will try again", "group", group, "error", err)
	case !p.Honoured:
		st.next, st.denied = now.Add(permissionsEvery), nil
		say("ignored", a.logger.Info, "the EC2 endpoint does not answer dry runs: this node's permissions are not checked before a takeover")
	case len(p.Denied()) > 0:
		st.next, st.denied = now.Add(permissionsRetry), p.Denied()
		say("denied:"+deniedText(st.denied), a.logger.Error, "this node lacks EC2 permissions a takeover needs: it owns nothing until they are granted",
			"denied", deniedText(st.denied), "recheck_in", permissionsRetry.String())
	default:
		st.next = now.Add(permissionsEvery)
		if st.denied != nil {
			for _, g := range a.groups {
				g.eligibleSince = now
			}
		}
		st.denied = nil
		say("ok", a.logger.Info, "EC2 permissions for a takeover checked (dry run)", "calls", len(p.Checks),
			"inconclusive", len(p.Inconclusive()))
	}
}

// permissionProblem says which permissions a takeover lacks, "" when none is known to.
func (a *Agent) permissionProblem() string {
	var denied []ec2.PermissionCheck
	for _, g := range a.groups {
		if st := a.health.perms[g.cfg.Name]; st != nil {
			denied = append(denied, st.denied...)
		}
	}
	if len(denied) == 0 {
		return ""
	}
	return "cannot take over: EC2 denies " + deniedText(denied) + " (UnauthorizedOperation); grant it in the instance profile"
}

// deniedText lists denied calls as "ec2:ReplaceRoute on rtb-1, rtb-2; ec2:CreateRoute on rtb-1".
func deniedText(denied []ec2.PermissionCheck) string {
	var order []string
	on := map[string][]string{}
	for _, d := range denied {
		if _, ok := on[d.Action]; !ok {
			order = append(order, d.Action)
		}
		on[d.Action] = append(on[d.Action], d.Resource)
	}
	parts := make([]string, 0, len(order))
	for _, action := range order {
		rs := on[action]
		if len(rs) > 3 {
			rs = append(rs[:3:3], fmt.Sprintf("%d more", len(on[action])-3))
		}
		parts = append(parts, action+" on "+strings.Join(rs, ", "))
	}
	return strings.Join(parts, "; ")
}
