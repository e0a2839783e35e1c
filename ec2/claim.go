package ec2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
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
	// EIPDone, RoutesDone and Verified are measured from Started.
	EIPDone, RoutesDone, Verified time.Duration
	// ReadErr is set when the state before acting could not be read; the Elastic IP and the
	// configured route tables were then moved without looking first.
	ReadErr error
	// VerifyErr lists what did not point at self when read back, or why it could not be read.
	VerifyErr error
	// Problems are the non-fatal findings of the read before acting (see Observation).
	Problems []string
}

// Step is one action of a Claim.
type Step struct {
	Action string
	Err    error
}

// RouteStep is the action taken on one route.
type RouteStep struct {
	RouteTableID, Destination string
	// Action is "unchanged", "replaced", "created" or "failed".
	Action string
	Err    error
}

// Err joins every step error and the verification error; nil when the claim fully succeeded.
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

// Claim points the group's Elastic IP and then every managed route at self, the routes in
// parallel (at most Options.MaxConcurrency calls at once), then reads them back to verify.
// What already points at self is not touched, so claiming twice is harmless. A failing step
// does not stop the others. The report is returned even with an error, which is Report.Err().
func (c *Client) Claim(ctx context.Context, g Group, self Self) (Report, error) {
	rep := Report{Started: time.Now()}
	m, err := c.resolveSelf(ctx, g, self)
	if err != nil {
		rep.ReadErr = fmt.Errorf("claim group %q: %w", g.Name, err)
		return rep, rep.Err()
	}
	er, tr := c.read(ctx, g, m)
	rep.Problems = tr.problems

	// The Elastic IP first.
	switch {
	case g.ElasticIP == "":
		rep.EIP = Step{Action: ActionNone}
	case er.err != nil:
		rep.ReadErr = errors.Join(rep.ReadErr, er.err)
		rep.EIP = c.associate(ctx, g.ElasticIP, "", m)
	case !er.found:
		rep.EIP = Step{Action: ActionFailed, Err: fmt.Errorf("elastic ip %s not found", g.ElasticIP)}
	case m.owns(er.eip.InstanceID, er.eip.ENIID):
		rep.EIP = Step{Action: ActionUnchanged}
	default:
		rep.EIP = c.associate(ctx, g.ElasticIP, er.eip.AllocationID, m)
	}
	rep.EIPDone = time.Since(rep.Started)

	// Then every route, in parallel.
	type job struct {
		cur  Route
		read bool // cur was read; otherwise act without knowing the current target
	}
	var jobs []job
	var steps []RouteStep
	if tr.err != nil {
		rep.ReadErr = errors.Join(rep.ReadErr, tr.err)
		for _, id := range g.RouteTableIDs {
			for _, d := range g.destinations() {
				jobs = append(jobs, job{cur: Route{RouteTableID: id, Destination: d}})
			}
		}
	} else {
		for _, r := range c.routesOf(tr.tables, g.destinations()) {
			jobs = append(jobs, job{cur: r, read: true})
		}
		for _, id := range tr.missing {
			for _, d := range g.destinations() {
				steps = append(steps, RouteStep{RouteTableID: id, Destination: d, Action: ActionFailed,
					Err: fmt.Errorf("route table %s not found", id)})
			}
		}
	}
	results := make([]RouteStep, len(jobs))
	sem := make(chan struct{}, c.opts.MaxConcurrency)
	var wg sync.WaitGroup
	for i, j := range jobs {
		if j.read && j.cur.State == RouteActive && m.owns(j.cur.InstanceID, j.cur.ENIID) {
			results[i] = RouteStep{RouteTableID: j.cur.RouteTableID, Destination: j.cur.Destination, Action: ActionUnchanged}
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = c.moveRoute(ctx, j.cur, j.read, m)
		})
	}
	wg.Wait()
	rep.Routes = append(results, steps...)
	sortSteps(rep.Routes)
	rep.RoutesDone = time.Since(rep.Started)

	if rep.Changed() || rep.ReadErr != nil {
		rep.VerifyErr = c.verify(ctx, g, m, rep)
	}
	rep.Verified = time.Since(rep.Started)
	c.log.Debug("claimed", "group", g.Name, "eip", rep.EIP.Action, "routes", len(rep.Routes),
		"eip_done", rep.EIPDone, "routes_done", rep.RoutesDone, "verified", rep.Verified, "error", rep.Err())
	return rep, rep.Err()
}

// associate points the Elastic IP ref (allocation id, or public IP when allocID is unknown) at m.
func (c *Client) associate(ctx context.Context, ref, allocID string, m me) Step {
	in := &ec2sdk.AssociateAddressInput{AllowReassociation: aws.Bool(true)}
	switch {
	case allocID != "":
		in.AllocationId = aws.String(allocID)
	case strings.HasPrefix(ref, "eipalloc-"):
		in.AllocationId = aws.String(ref)
	default:
		in.PublicIp = aws.String(ref)
	}
	if m.targetENI {
		in.NetworkInterfaceId = aws.String(m.eni)
	} else {
		in.InstanceId = aws.String(m.instanceID)
	}
	if _, err := c.api.AssociateAddress(ctx, in); err != nil {
		if code := errorCode(err); code == "InvalidAllocationID.NotFound" || code == "InvalidAddress.NotFound" {
			err = fmt.Errorf("elastic ip %s not found: %w", ref, err)
		}
		return Step{Action: ActionFailed, Err: fmt.Errorf("associate elastic ip %s with %s: %w", ref, m.target(), err)}
	}
	c.log.Info("associated elastic ip", "eip", ref, "target", m.target())
	return Step{Action: ActionAssociated}
}

// target is what routes and the Elastic IP point at.
func (m me) target() string {
	if m.targetENI {
		return m.eni
	}
	return m.instanceID
}

// moveRoute points one route at m: ReplaceRoute when it exists, CreateRoute when it is missing,
// switching to the other call when EC2 says the route appeared or vanished meanwhile.
func (c *Client) moveRoute(ctx context.Context, cur Route, read bool, m me) RouteStep {
	step := RouteStep{RouteTableID: cur.RouteTableID, Destination: cur.Destination}
	var err error
	if read && cur.State == RouteMissing {
		step.Action = ActionCreated
		if err = c.createRoute(ctx, cur, m); errorCode(err) == "RouteAlreadyExists" {
			step.Action = ActionReplaced
			err = c.replaceRoute(ctx, cur, m)
		}
	} else {
		step.Action = ActionReplaced
		if err = c.replaceRoute(ctx, cur, m); routeMissing(err) {
			step.Action = ActionCreated
			err = c.createRoute(ctx, cur, m)
			if errorCode(err) == "RouteAlreadyExists" {
				step.Action = ActionReplaced
				err = c.replaceRoute(ctx, cur, m)
			}
		}
	}
	if err != nil {
		if errorCode(err) == "InvalidRouteTableID.NotFound" {
			err = fmt.Errorf("route table %s not found: %w", cur.RouteTableID, err)
		}
		step.Action, step.Err = ActionFailed, err
		return step
	}
	c.log.Info("pointed route at self", "route_table", cur.RouteTableID, "destination", cur.Destination,
		"action", step.Action, "target", m.target(), "was", cur.InstanceID+cur.OtherTarget, "was_state", cur.State)
	return step
}

// routeMissing reports whether ReplaceRoute failed because there is no such route.
func routeMissing(err error) bool {
	switch errorCode(err) {
	case "InvalidRoute.NotFound":
		return true
	case "InvalidParameterValue":
		// "There is no route defined for '0.0.0.0/0' in the route table. Use CreateRoute instead."
		var ae smithy.APIError
		return errors.As(err, &ae) && strings.Contains(ae.ErrorMessage(), "CreateRoute")
	}
	return false
}

func (c *Client) replaceRoute(ctx context.Context, r Route, m me) error {
	in := &ec2sdk.ReplaceRouteInput{RouteTableId: aws.String(r.RouteTableID), DestinationCidrBlock: aws.String(r.Destination)}
	if m.targetENI {
		in.NetworkInterfaceId = aws.String(m.eni)
	} else {
		in.InstanceId = aws.String(m.instanceID)
	}
	if _, err := c.api.ReplaceRoute(ctx, in); err != nil {
		return fmt.Errorf("replace route %s in %s: %w", r.Destination, r.RouteTableID, err)
	}
	return nil
}

func (c *Client) createRoute(ctx context.Context, r Route, m me) error {
	in := &ec2sdk.CreateRouteInput{RouteTableId: aws.String(r.RouteTableID), DestinationCidrBlock: aws.String(r.Destination)}
	if m.targetENI {
		in.NetworkInterfaceId = aws.String(m.eni)
	} else {
		in.InstanceId = aws.String(m.instanceID)
	}
	if _, err := c.api.CreateRoute(ctx, in); err != nil {
		return fmt.Errorf("create route %s in %s: %w", r.Destination, r.RouteTableID, err)
	}
	return nil
}

// verify reads the Elastic IP and the routes that did not fail back and reports every one not
// pointing at m.
func (c *Client) verify(ctx context.Context, g Group, m me, rep Report) error {
	var ids []string
	for _, s := range rep.Routes {
		if s.Err == nil && !slices.Contains(ids, s.RouteTableID) {
			ids = append(ids, s.RouteTableID)
		}
	}
	var (
		er   eipRead
		errs []error
		wg   sync.WaitGroup
	)
	checkEIP := g.ElasticIP != "" && rep.EIP.Err == nil
	if checkEIP {
		wg.Go(func() { er = c.readEIP(ctx, g.ElasticIP) })
	}
	var routes []Route
	tablesOK := true
	if len(ids) > 0 {
		tables, err := c.describeRouteTables(ctx, []types.Filter{{Name: aws.String("route-table-id"), Values: ids}})
		if err != nil {
			tablesOK = false
			errs = append(errs, fmt.Errorf("verify: describe route tables: %w", err))
		} else {
			routes = c.routesOf(tables, g.destinations())
		}
	}
	wg.Wait()
	if checkEIP {
		switch {
		case er.err != nil:
			errs = append(errs, fmt.Errorf("verify: %w", er.err))
		case !er.found:
			errs = append(errs, fmt.Errorf("verify: elastic ip %s not found", g.ElasticIP))
		case !m.owns(er.eip.InstanceID, er.eip.ENIID):
			errs = append(errs, fmt.Errorf("verify: elastic ip %s points at %s, want %s", g.ElasticIP, orNone(er.eip.InstanceID, er.eip.ENIID), m.target()))
		}
	}
	got := map[[2]string]Route{}
	for _, r := range routes {
		got[[2]string{r.RouteTableID, r.Destination}] = r
	}
	for _, s := range rep.Routes {
		if s.Err != nil || !tablesOK {
			continue
		}
		r, ok := got[[2]string{s.RouteTableID, s.Destination}]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("verify: route table %s not found", s.RouteTableID))
		case r.State != RouteActive || !m.owns(r.InstanceID, r.ENIID):
			errs = append(errs, fmt.Errorf("verify: route %s in %s points at %s (%s), want %s",
				s.Destination, s.RouteTableID, orNone(r.InstanceID, r.ENIID, r.OtherTarget), r.State, m.target()))
		}
	}
	return errors.Join(errs...)
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
