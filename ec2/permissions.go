package ec2

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// A takeover needs three mutating actions. An instance profile that lacks one (ReplaceRoute
// is the usual slip) would be found out only at the worst moment: the Elastic IP moved, every
// route refused. CheckPermissions asks EC2 beforehand with DryRun, which checks the caller's
// permissions and changes nothing: EC2 answers DryRunOperation when the call would have been
// allowed and UnauthorizedOperation when not.
//
// An endpoint that ignores DryRun (some EC2 emulators) would carry the calls out. So with an
// endpoint override the first call is one that changes nothing even then: ReplaceRoute of a
// route no VPC has (dryRunDestination), which such an endpoint refuses for the missing route.
// Only when that call was answered as a dry run are the others (AssociateAddress, CreateRoute)
// made. EC2 itself always answers dry runs: there ReplaceRoute is tried on the group's own
// route, as a takeover would call it.

// dryRunDestination is the destination of the dry-run route calls: the last address of
// TEST-NET-1 (RFC 5737), which no route table routes.
const dryRunDestination = "192.0.2.255/32"

// Error codes of DryRun answers.
const (
	codeDryRunOK     = "DryRunOperation"
	codeUnauthorized = "UnauthorizedOperation"
)

// PermissionCheck is the answer to one dry-run call.
type PermissionCheck struct {
	// Action is the IAM action, e.g. "ec2:ReplaceRoute".
	Action string
	// Resource is what it was tried on: an allocation id, a public IP or a route table id.
	Resource string
	// Denied is set when EC2 answered UnauthorizedOperation; Err then holds EC2's message.
	Denied bool
	// Err is set when the answer was neither "allowed" nor "denied" (a network error, a 5xx,
	// throttling): nothing was learnt.
	Err error
}

// Permissions is the outcome of CheckPermissions.
type Permissions struct {
	// Honoured is false when the endpoint carried out the first dry run instead of answering
	// it as one: nothing is known, and no further call was made.
	Honoured bool
	// Checks holds one entry per call made.
	Checks []PermissionCheck
}

// Denied lists the calls EC2 refused.
func (p Permissions) Denied() []PermissionCheck {
	var out []PermissionCheck
	for _, c := range p.Checks {
		if c.Denied {
			out = append(out, c)
		}
	}
	return out
}

// Inconclusive lists the calls whose answer said nothing about permissions.
func (p Permissions) Inconclusive() []PermissionCheck {
	var out []PermissionCheck
	for _, c := range p.Checks {
		if c.Err != nil && !c.Denied {
			out = append(out, c)
		}
	}
	return out
}

// CheckPermissions dry-runs every mutating call a takeover of g by self would make: the
// Elastic IP's association and, for each route table of obs (the group's last read),
// ReplaceRoute and CreateRoute. It changes nothing, whatever the endpoint.
func (c *Client) CheckPermissions(ctx context.Context, g Group, self Self, obs Observation) (Permissions, error) {
	m, err := c.resolveSelf(ctx, g, self)
	if err != nil {
		return Permissions{}, fmt.Errorf("check permissions: %w", err)
	}
	// One ReplaceRoute per table, on the table's first managed route when EC2 itself answers.
	var tables []string
	replaceDest := map[string]string{}
	for _, r := range obs.Routes {
		if !slices.Contains(tables, r.RouteTableID) {
			tables = append(tables, r.RouteTableID)
			replaceDest[r.RouteTableID] = dryRunDestination
			if c.opts.Endpoint == "" {
				replaceDest[r.RouteTableID] = r.Destination
			}
		}
	}
	var p Permissions
	if len(tables) > 0 {
		// The harmless call first: it tells whether this endpoint answers dry runs.
		first := c.dryRunRoute(ctx, "ec2:ReplaceRoute", tables[0], replaceDest[tables[0]], m)
		switch {
		case first.Err == nil || first.Denied:
		case errorCode(first.Err) == "" || c.retryer.IsErrorRetryable(first.Err):
			return p, fmt.Errorf("check permissions: %w", first.Err)
		default:
			return p, nil // carried out and refused for the missing route: no dry runs here
		}
		p.Honoured = true
		p.Checks = append(p.Checks, first)
		for _, t := range tables[1:] {
			p.Checks = append(p.Checks, c.dryRunRoute(ctx, "ec2:ReplaceRoute", t, replaceDest[t], m))
		}
		for _, t := range tables {
			p.Checks = append(p.Checks, c.dryRunRoute(ctx, "ec2:CreateRoute", t, dryRunDestination, m))
		}
	}
	if g.ElasticIP != "" {
		if len(tables) == 0 {
			// Without a route table to try harmlessly first, the association's dry run is
			// made only on an endpoint known to be EC2's (no endpoint override).
			if c.opts.Endpoint != "" {
				return p, nil
			}
			p.Honoured = true
		}
		p.Checks = append(p.Checks, c.dryRunAssociate(ctx, g.ElasticIP, obs.EIP.AllocationID, m))
	}
	return p, nil
}

// dryRunRoute dry-runs ReplaceRoute or CreateRoute of dest in table.
func (c *Client) dryRunRoute(ctx context.Context, action, table, dest string, m me) PermissionCheck {
	var err error
	switch action {
	case "ec2:ReplaceRoute":
		in := replaceRouteInput(table, dest, m)
		in.DryRun = aws.Bool(true)
		_, err = c.api.ReplaceRoute(ctx, in)
	default:
		in := createRouteInput(table, dest, m)
		in.DryRun = aws.Bool(true)
		_, err = c.api.CreateRoute(ctx, in)
	}
	return verdict(action, table, err)
}

// dryRunAssociate dry-runs the association of the Elastic IP with m.
func (c *Client) dryRunAssociate(ctx context.Context, ref, allocID string, m me) PermissionCheck {
	in := associateInput(ref, allocID, m)
	in.DryRun = aws.Bool(true)
	_, err := c.api.AssociateAddress(ctx, in)
	return verdict("ec2:AssociateAddress", ref, err)
}

// verdict reads a dry run's answer.
func verdict(action, resource string, err error) PermissionCheck {
	pc := PermissionCheck{Action: action, Resource: resource}
	switch code := errorCode(err); {
	case code == codeDryRunOK:
	case code == codeUnauthorized:
		pc.Denied, pc.Err = true, err
	case err == nil:
		pc.Err = errors.New("the call was carried out: the endpoint ignores DryRun")
	default:
		pc.Err = err
	}
	return pc
}
