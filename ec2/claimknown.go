package ec2

import (
	"context"
	"sync"
	"time"
)

// ClaimKnown is Claim for a takeover that cannot wait: instead of reading EC2 first it acts on
// known, a recent Observe of the same group, and moves the Elastic IP and every route at once
// (routes at most Options.MaxConcurrency at a time), then reads back and verifies as Claim
// does. What known shows pointing at self is left alone; a route known as missing is created,
// and one that vanished since known was read is created instead of replaced. Route tables that
// appeared since known was read are not touched: the verification cannot see them either, so
// the caller's next Observe finds them and a later Claim moves them.
func (c *Client) ClaimKnown(ctx context.Context, g Group, self Self, known Observation) (Report, error) {
	rep := Report{Started: time.Now(), Problems: known.Problems}
	m, err := c.resolveSelf(ctx, g, self)
	if err != nil {
		rep.ReadErr = err
		return rep, rep.Err()
	}
	var wg sync.WaitGroup
	switch {
	case g.ElasticIP == "":
		rep.EIP = Step{Action: ActionNone}
	case known.EIP.AllocationID != "" && m.owns(known.EIP.InstanceID, known.EIP.ENIID):
		rep.EIP = Step{Action: ActionUnchanged}
	default:
		wg.Go(func() {
			rep.EIP = c.associate(ctx, g.ElasticIP, known.EIP.AllocationID, m)
			rep.EIPDone = time.Since(rep.Started)
		})
	}
	results := make([]RouteStep, len(known.Routes))
	sem := make(chan struct{}, c.opts.MaxConcurrency)
	for i, r := range known.Routes {
		if r.State == RouteActive && m.owns(r.InstanceID, r.ENIID) {
			results[i] = RouteStep{RouteTableID: r.RouteTableID, Destination: r.Destination, Action: ActionUnchanged}
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = c.moveRoute(ctx, r, true, m)
		})
	}
	wg.Wait()
	rep.Routes = results
	sortSteps(rep.Routes)
	rep.RoutesDone = time.Since(rep.Started)
	if rep.Changed() {
		rep.VerifyErr = c.verify(ctx, g, m, rep)
	}
	rep.Verified = time.Since(rep.Started)
	c.log.Debug("claimed from a known state", "group", g.Name, "eip", rep.EIP.Action, "routes", len(rep.Routes),
		"eip_done", rep.EIPDone, "routes_done", rep.RoutesDone, "verified", rep.Verified, "error", rep.Err())
	return rep, rep.Err()
}
