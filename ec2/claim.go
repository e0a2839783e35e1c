package ec2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Step actions reported by Claim.
const (
	ActionNone       = "none"       // the group has no Elastic IP
	ActionUnchanged  = "unchanged"  // already pointed at self; no call made
	ActionAssociated = "associated" // the Elastic IP was associated with self
	ActionReplaced   = "replaced"   // ReplaceRoute pointed the route at self
	ActionCreated    = "created"    // CreateRoute added the missing route
	ActionFailed     = "failed"     // see Err
)

// Report is what a Claim did, step by step, with timings since Started.
type Report struct {
	// EIP is the Elastic IP step: "none", "unchanged", "associated" or "failed".
	EIP Step
	// Routes has one step per managed route, sorted by table then destination.
	Routes  []RouteStep
	Started time.Time
	// EIPDone and RoutesDone are when the first round of calls was done with the Elastic IP
	// and with every route; Verified is when the claim was done, second round and its
	// verification included. All are measured from Started.
	EIPDone, RoutesDone, Verified time.Duration
	// Rereads counts the waits of the verification for EC2 to show what the claim moved
	// (see Claim).
	Rereads int
	// ReadErr is set when the state before acting could not be read; the Elastic IP and the
	// configured route tables were then moved without looking first.
	ReadErr error
	// VerifyErr lists what still did not point at self when read back after the second round,
	// or why it could not be read.
	VerifyErr error
	// Problems are the non-fatal findings of the last read of the route tables (see
	// Observation).
	Problems []string
}

// Step is one action of a Claim.
type Step struct {
	Action string
	Err    error
	// SecondRound is set when the verification found this not pointing at self after the
	// first round and the claim moved it again; Action and Err are then those of the second
	// round.
	SecondRound bool
}

// RouteStep is the action taken on one route.
type RouteStep struct {
	RouteTableID, Destination string
	// Action is "unchanged", "replaced", "created" or "failed".
	Action string
	Err    error
	// Done is when the call (or calls) for this route returned, measured from
	// Report.Started; zero when none was made.
	Done time.Duration
	// SecondRound is set when the verification found the route not pointing at self (or
	// found a table the first round did not know) and the claim moved it in a second round;
	// Action and Err are then those of the second round.
	SecondRound bool
}

// Err joins every step error and the verification error; nil when the claim fully succeeded,
// even if it took a second round.
func (r Report) Err() error {
	errs := []error{r.ReadErr, r.EIP.Err}
	for _, s := range r.Routes {
		errs = append(errs, s.Err)
	}
	errs = append(errs, r.VerifyErr)
	return errors.Join(errs...)
}

// Changed reports whether the claim made any mutating call.
func (r Report) Changed() bool {
	if r.EIP.Action == ActionAssociated {
		return true
	}
	for _, s := range r.Routes {
		if s.Action == ActionReplaced || s.Action == ActionCreated {
			return true
		}
	}
	return false
}

// Claim points the group's Elastic IP and every managed route at self, reads them back, moves
// again whatever does not point at self (a second round), and verifies once more; only what is
// still wrong after that is an error. A failing step does not stop the others. The report is
// returned even with an error, which is Report.Err().
//
// EC2 is eventually consistent: a read right after a change may still show the old state.
// So what this claim itself moved with success and reads back as wrong is read again, after
// 100 ms, 200 ms, 400 ms… (Report.Rereads counts the waits), until it reads right or the
// verification budget is spent: Options.VerifyWait (default 2s), at most a quarter of the time
// left before ctx's deadline, for the whole claim. Only what is still wrong then gets the
// second round. What the claim did not move (found in place by the first read, or a table
// that appeared since known) and reads wrong is moved again at once. Each resource is moved
// at most twice; after its second round it is read again the same way while the budget
// lasts. A stale read is logged at debug level only.
//
// With known == nil (a repair by the owner, or any claim without a recent read) Claim reads
// first and touches only what does not point at self, so claiming twice is harmless and a
// claim that finds everything in place makes no mutating call.
//
// With known, a recent Observe of the group (an urgent takeover from another instance), Claim
// does not read first: it moves the Elastic IP and every route of known.Routes at once, whatever
// known says they point at, since a route shown pointing at self may have been moved back since
// and ReplaceRoute to the same target is harmless. A route known as missing is created, any
// other replaced; when EC2 says the route appeared or vanished meanwhile, the other call is
// made. Against reading first, this saves the read's round trip whenever known lists the
// group's tables; a table that appeared since costs the second round (see BenchmarkTakeover).
//
// The Elastic IP goes first, then the routes of tables that carry traffic (subnets are
// associated with them), then the others; at most Options.MaxConcurrency calls run at once.
// Every mutating call waits for a token of the client's model of EC2's bucket (pacer), so
// that a round larger than EC2's burst is sent as fast as EC2 accepts it, in that order. The
// verification re-selects the route tables as Observe does, so tables that appeared since
// known was read are found and moved in the second round. A step whose call failed (after the
// SDK's retries) is not tried again: its error stands.
func (c *Client) Claim(ctx context.Context, g Group, self Self, known *Observation) (Report, error) {
	rep := Report{Started: time.Now()}
	m, err := c.resolveSelf(ctx, g, self)
	if err != nil {
		rep.ReadErr = fmt.Errorf("claim group %q: %w", g.Name, err)
		return rep, rep.Err()
	}
	var first moves
	if known != nil {
		first = c.planKnown(g, *known, &rep)
	} else {
		first = c.planRead(ctx, g, m, &rep)
	}
	eip, eipDone, routes := c.apply(ctx, m, g.ElasticIP, first, rep.Started)
	if first.eip {
		rep.EIP = eip
	}
	rep.record(routes, false)
	rep.EIPDone = eipDone
	rep.RoutesDone = time.Since(rep.Started)

	// Without a read first, the verification is the only fresh look; with one, there is
	// nothing to verify when nothing was moved.
	if known != nil || rep.ReadErr != nil || rep.Changed() {
		c.settle(ctx, g, m, &rep)
	}
	rep.Verified = time.Since(rep.Started)
	c.log.Debug("claimed", "group", g.Name, "known", known != nil, "eip", rep.EIP.Action, "routes", len(rep.Routes),
		"second_round", rep.secondRound(), "rereads", rep.Rereads, "eip_done", rep.EIPDone, "routes_done", rep.RoutesDone,
		"verified", rep.Verified, "error", rep.Err())
	return rep, rep.Err()
}

// moves are the calls of one round of a Claim.
type moves struct {
	eip     bool   // associate the Elastic IP
	allocID string // its allocation id, when known
	// routes are pointed at self: those with State RouteMissing are created first, the others
	// replaced first.
	routes []Route
}

// planRead reads the group and plans what does not point at self, recording in rep what needs
// no call or cannot be done. When the read fails, it plans the Elastic IP and every destination
// of the configured route tables without knowing their state.
func (c *Client) planRead(ctx context.Context, g Group, m me, rep *Report) moves {
	var mv moves
	er, tr := c.read(ctx, g, m)
	rep.Problems = tr.problems

	switch {
	case g.ElasticIP == "":
		rep.EIP = Step{Action: ActionNone}
	case er.err != nil:
		rep.ReadErr = errors.Join(rep.ReadErr, er.err)
		mv.eip = true
	case !er.found:
		rep.EIP = Step{Action: ActionFailed, Err: fmt.Errorf("elastic ip %s not found", g.ElasticIP)}
	case m.holdsEIP(er.eip):
		rep.EIP = Step{Action: ActionUnchanged}
	default:
		mv.eip, mv.allocID = true, er.eip.AllocationID
	}

	if tr.err != nil {
		rep.ReadErr = errors.Join(rep.ReadErr, tr.err)
		for _, id := range g.RouteTableIDs {
			for _, d := range g.destinations() {
				mv.routes = append(mv.routes, Route{RouteTableID: id, Destination: d})
			}
		}
		return mv
	}
	for _, r := range c.routesOf(tr.tables, g.destinations()) {
		if r.State == RouteActive && m.owns(r.InstanceID, r.ENIID) {
			rep.Routes = append(rep.Routes, RouteStep{RouteTableID: r.RouteTableID, Destination: r.Destination, Action: ActionUnchanged})
		} else {
			mv.routes = append(mv.routes, r)
		}
	}
	rep.addMissing(tr.missing, g.destinations())
	return mv
}

// planKnown plans the Elastic IP and every route of known, whatever they point at.
func (c *Client) planKnown(g Group, known Observation, rep *Report) moves {
	rep.Problems = slices.Clone(known.Problems)
	mv := moves{routes: known.Routes}
	if g.ElasticIP == "" {
		rep.EIP = Step{Action: ActionNone}
	} else {
		mv.eip, mv.allocID = true, known.EIP.AllocationID
	}
	return mv
}

// apply makes one round of calls: the Elastic IP (ref) first, then the routes of tables that
// carry traffic (Route.Associated), then the others, at most Options.MaxConcurrency calls in
// parallel. Each call's token is reserved from the pacer in that order before it is made, so
// when a round is larger than EC2's burst the calls are sent in that order as the tokens
// arrive: the Elastic IP and the clients' tables never wait behind tables no subnet uses.
// eipDone and each route's Done are measured from started.
func (c *Client) apply(ctx context.Context, m me, ref string, mv moves, started time.Time) (eip Step, eipDone time.Duration, routes []RouteStep) {
	eipDone = time.Since(started)
	routes = make([]RouteStep, len(mv.routes))
	order := trafficFirst(mv.routes)
	n := len(order)
	if mv.eip {
		n++
	}
	var (
		mu   sync.Mutex
		next int
	)
	// take hands out the next call of the round with its token reserved; ok is false when
	// none is left.
	take := func() (i int, cctx context.Context, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if next == n {
			return 0, nil, false
		}
		next++
		return next - 1, c.withTicket(ctx), true
	}
	var wg sync.WaitGroup
	for range min(c.opts.MaxConcurrency, n) {
		wg.Go(func() {
			for {
				i, cctx, ok := take()
				if !ok {
					return
				}
				switch {
				case mv.eip && i == 0:
					eip = c.associate(cctx, ref, mv.allocID, m)
					eipDone = time.Since(started)
				default:
					if mv.eip {
						i--
					}
					j := order[i]
					routes[j] = c.moveRoute(cctx, mv.routes[j], m)
					routes[j].Done = time.Since(started)
				}
				c.release(cctx)
			}
		})
	}
	wg.Wait()
	return eip, eipDone, routes
}

// trafficFirst returns the indices of routes, those of tables that carry traffic first, each
// part in its original order.
func trafficFirst(routes []Route) []int {
	order := make([]int, 0, len(routes))
	for i, r := range routes {
		if r.Associated {
			order = append(order, i)
		}
	}
	for i, r := range routes {
		if !r.Associated {
			order = append(order, i)
		}
	}
	return order
}

// Bounds of the verification's re-reads (see Claim).
const (
	firstVerifyWait = 100 * time.Millisecond
	// verifyShare is the share of the time left before the claim's deadline the re-reads
	// may use at most, so that a second round still fits.
	verifyShare = 4
)

// eipKey names the Elastic IP among the route keys of a claim.
var eipKey = routeKey{}

// mismatch is one thing the verification found not pointing at self.
type mismatch struct {
	eip     bool   // the Elastic IP; else route
	allocID string // of the Elastic IP
	route   Route
	err     error // what is wrong, for the report and logs
}

func (w mismatch) key() routeKey {
	if w.eip {
		return eipKey
	}
	return routeKey{w.route.RouteTableID, w.route.Destination}
}

// movesOf turns mismatches into a round of calls.
func movesOf(ws []mismatch) moves {
	var mv moves
	for _, w := range ws {
		if w.eip {
			mv.eip, mv.allocID = true, w.allocID
		} else {
			mv.routes = append(mv.routes, w.route)
		}
	}
	return mv
}

// verifyBudget is how long the verification may keep re-reading: Options.VerifyWait, at most
// a quarter of the time left before ctx's deadline.
func (c *Client) verifyBudget(ctx context.Context) time.Duration {
	b := c.opts.VerifyWait
	if d, ok := ctx.Deadline(); ok {
		b = min(b, time.Until(d)/verifyShare)
	}
	return max(b, 0)
}

// settle verifies the claim. What the claim moved itself and still reads as wrong is read
// again with a growing backoff until it reads right or the verification budget is spent (EC2
// is eventually consistent); anything else wrong, and what is still wrong when the budget is
// spent, is moved again at once (a second round, at most once per resource) and verified. What
// is still wrong after that is the verification error.
func (c *Client) settle(ctx context.Context, g Group, m me, rep *Report) {
	deadline := time.Now().Add(c.verifyBudget(ctx))
	wait := firstVerifyWait
	moved := rep.moved() // by this claim, with success
	again := map[routeKey]bool{}
	for {
		wrong, errs := c.check(ctx, g, m, rep)
		var pending, move, final []mismatch
		patient := ctx.Err() == nil && time.Now().Before(deadline)
		for _, w := range wrong {
			switch {
			case moved[w.key()] && patient:
				pending = append(pending, w)
			case !again[w.key()]:
				move = append(move, w)
			default:
				final = append(final, w)
			}
		}
		if len(move) > 0 {
			c.log.Info("claim: moving again what the verification found not pointing at self", "group", g.Name, "wrong", describe(move))
			fix := movesOf(move)
			eip, _, routes := c.apply(ctx, m, g.ElasticIP, fix, rep.Started)
			if fix.eip {
				rep.EIP = eip
				rep.EIP.SecondRound = true
			}
			rep.record(routes, true)
			for k := range rep.moved() {
				moved[k] = true
			}
			for _, w := range move {
				again[w.key()] = true
			}
			continue // verify at once what the second round did
		}
		if len(pending) == 0 {
			for _, w := range final {
				errs = append(errs, w.err)
			}
			rep.VerifyErr = errors.Join(errs...)
			return
		}
		// EC2 may still show what this claim has just changed as it was: not an error.
		pause := min(wait, time.Until(deadline))
		c.log.Debug("claim: read-back does not show the change yet; reading again", "group", g.Name,
			"wait", pause, "pending", describe(pending))
		rep.Rereads++
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		wait *= 2
	}
}

// describe lists mismatches for logs.
func describe(ws []mismatch) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.err.Error()
	}
	return out
}

// moved returns the Elastic IP (eipKey) and the routes the claim changed with success.
func (r Report) moved() map[routeKey]bool {
	out := map[routeKey]bool{}
	if r.EIP.Action == ActionAssociated && r.EIP.Err == nil {
		out[eipKey] = true
	}
	for _, s := range r.Routes {
		if (s.Action == ActionReplaced || s.Action == ActionCreated) && s.Err == nil {
			out[routeKey{s.RouteTableID, s.Destination}] = true
		}
	}
	return out
}

// check reads back the Elastic IP and the route tables, re-selecting the tables as Observe
// does, and returns what does not point at self (wrong) and, apart from it, what cannot be
// fixed by moving (errs). The routes checked are those selected now and those the claim
// moved; a step that failed is left out, its error stands. A configured route table that does
// not exist gets a failed step.
func (c *Client) check(ctx context.Context, g Group, m me, rep *Report) (wrong []mismatch, errs []error) {
	er, tr := c.read(ctx, g, m)
	if g.ElasticIP != "" && rep.EIP.Err == nil {
		switch {
		case er.err != nil:
			errs = append(errs, fmt.Errorf("verify: %w", er.err))
		case !er.found:
			errs = append(errs, fmt.Errorf("verify: elastic ip %s not found", g.ElasticIP))
		case !m.holdsEIP(er.eip):
			wrong = append(wrong, mismatch{eip: true, allocID: er.eip.AllocationID,
				err: fmt.Errorf("verify: elastic ip %s points at %s, want %s",
					g.ElasticIP, eipAt(er.eip, m), m.target())})
		}
	}
	if tr.err != nil {
		return wrong, append(errs, fmt.Errorf("verify: %w", tr.err))
	}
	rep.Problems = tr.problems
	rep.addMissing(tr.missing, g.destinations())

	steps := map[routeKey]RouteStep{}
	for _, s := range rep.Routes {
		steps[routeKey{s.RouteTableID, s.Destination}] = s
	}
	routes := c.routesOf(tr.tables, g.destinations())
	selected := map[routeKey]bool{}
	for _, r := range routes {
		selected[routeKey{r.RouteTableID, r.Destination}] = true
	}
	for _, s := range rep.Routes {
		k := routeKey{s.RouteTableID, s.Destination}
		if s.Err != nil || selected[k] {
			continue
		}
		// Claimed, but no longer selected: still verified.
		if t, ok := tr.all[s.RouteTableID]; ok {
			routes = append(routes, c.routeIn(t, s.Destination))
		} else {
			errs = append(errs, fmt.Errorf("verify: route table %s not found", s.RouteTableID))
		}
	}
	for _, r := range routes {
		if s, ok := steps[routeKey{r.RouteTableID, r.Destination}]; ok && s.Err != nil {
			continue
		}
		if r.State == RouteActive && m.owns(r.InstanceID, r.ENIID) {
			continue
		}
		wrong = append(wrong, mismatch{route: r, err: fmt.Errorf("verify: route %s in %s points at %s (%s), want %s",
			r.Destination, r.RouteTableID, orNone(r.InstanceID, r.ENIID, r.OtherTarget), r.State, m.route())})
	}
	return wrong, errs
}

// routeKey names one destination of one route table.
type routeKey struct{ table, dest string }

// record puts route steps into the report, replacing the step of the same route; second marks
// them as moved again after the verification.
func (r *Report) record(steps []RouteStep, second bool) {
	at := map[routeKey]int{}
	for i, s := range r.Routes {
		at[routeKey{s.RouteTableID, s.Destination}] = i
	}
	for _, s := range steps {
		s.SecondRound = second
		if i, ok := at[routeKey{s.RouteTableID, s.Destination}]; ok {
			r.Routes[i] = s
		} else {
			r.Routes = append(r.Routes, s)
		}
	}
	sortSteps(r.Routes)
}

// addMissing records a failed step for every destination of the configured route tables that
// do not exist, unless the route already has a step.
func (r *Report) addMissing(ids, dests []string) {
	var steps []RouteStep
	for _, id := range ids {
		for _, d := range dests {
			if !slices.ContainsFunc(r.Routes, func(s RouteStep) bool { return s.RouteTableID == id && s.Destination == d }) {
				steps = append(steps, RouteStep{RouteTableID: id, Destination: d, Action: ActionFailed,
					Err: fmt.Errorf("route table %s not found", id)})
			}
		}
	}
	if len(steps) > 0 {
		r.record(steps, false)
	}
}

// secondRound lists the steps the second round made, for logs.
func (r Report) secondRound() []string {
	var out []string
	if r.EIP.SecondRound {
		out = append(out, "elastic ip")
	}
	for _, s := range r.Routes {
		if s.SecondRound {
			out = append(out, s.RouteTableID+" "+s.Destination)
		}
	}
	return out
}

func orNone(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return "nothing"
}

func sortSteps(steps []RouteStep) {
	slices.SortFunc(steps, func(a, b RouteStep) int {
		if a.RouteTableID != b.RouteTableID {
			return strings.Compare(a.RouteTableID, b.RouteTableID)
		}
		return strings.Compare(a.Destination, b.Destination)
	})
}
