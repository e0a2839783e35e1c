package ec2

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

// The mutating calls of a claim: what each sends, and how its answer is read.

// associate points the Elastic IP ref (allocation id, or public IP when allocID is unknown) at m.
func (c *Client) associate(ctx context.Context, ref, allocID string, m me) Step {
	if m.pin && m.addr.Want == "" {
		return Step{Action: ActionFailed, Err: fmt.Errorf("associate elastic ip %s with %s: %w", ref, m.target(), m.addr.shortError())}
	}
	in := associateInput(ref, allocID, m)
	if _, err := c.api.AssociateAddress(ctx, in); err != nil {
		if code := errorCode(err); code == "InvalidAllocationID.NotFound" || code == "InvalidAddress.NotFound" {
			err = fmt.Errorf("elastic ip %s not found: %w", ref, err)
		}
		return Step{Action: ActionFailed, Err: fmt.Errorf("associate elastic ip %s with %s: %w", ref, m.target(), err)}
	}
	c.log.Info("associated elastic ip", "eip", ref, "target", m.target())
	return Step{Action: ActionAssociated}
}

// target names this instance in log lines: its id, or the interface it is targeted by, and
// the private address the Elastic IP goes on when it is pinned.
func (m me) target() string {
	if m.pin && m.addr.Want != "" {
		return m.route() + " at " + m.addr.Want
	}
	return m.route()
}

// route names this instance in log lines without the Elastic IP's private address.
func (m me) route() string {
	switch {
	case m.targetENI:
		return m.eni
	case m.multi.route != "":
		return m.instanceID + " (" + m.multi.eip + ", " + m.multi.route + ")"
	}
	return m.instanceID
}

// moveRoute points one route at m: CreateRoute when cur says it is missing, ReplaceRoute
// otherwise (also when its state is unknown), switching to the other call when EC2 says the
// route appeared or vanished meanwhile.
func (c *Client) moveRoute(ctx context.Context, cur Route, m me) RouteStep {
	step := RouteStep{RouteTableID: cur.RouteTableID, Destination: cur.Destination}
	var err error
	if cur.State == RouteMissing {
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
		"action", step.Action, "target", m.route(), "was", cur.InstanceID+cur.OtherTarget, "was_state", cur.State)
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
	if _, err := c.api.ReplaceRoute(ctx, replaceRouteInput(r.RouteTableID, r.Destination, m)); err != nil {
		return fmt.Errorf("replace route %s in %s: %w", r.Destination, r.RouteTableID, err)
	}
	return nil
}

func (c *Client) createRoute(ctx context.Context, r Route, m me) error {
	if _, err := c.api.CreateRoute(ctx, createRouteInput(r.RouteTableID, r.Destination, m)); err != nil {
		return fmt.Errorf("create route %s in %s: %w", r.Destination, r.RouteTableID, err)
	}
	return nil
}

// associateInput is the AssociateAddress call that points the Elastic IP ref (allocation id,
// or public IP when allocID is unknown) at m, with reassociation.
func associateInput(ref, allocID string, m me) *ec2sdk.AssociateAddressInput {
	in := &ec2sdk.AssociateAddressInput{AllowReassociation: aws.Bool(true)}
	switch {
	case allocID != "":
		in.AllocationId = aws.String(allocID)
	case strings.HasPrefix(ref, "eipalloc-"):
		in.AllocationId = aws.String(ref)
	default:
		in.PublicIp = aws.String(ref)
	}
	in.InstanceId, in.NetworkInterfaceId = targetOf(m.eipTarget())
	if m.pin && m.addr.Want != "" {
		// Named even when it is the primary address: an Elastic IP left on another address
		// of this interface moves to it.
		in.PrivateIpAddress = aws.String(m.addr.Want)
	}
	return in
}

// eipAt names where an Elastic IP as read points, for messages.
func eipAt(e EIP, m me) string {
	at := orNone(e.InstanceID, e.ENIID)
	if m.pin && e.PrivateIP != "" {
		at += " at " + e.PrivateIP
	}
	return at
}

// replaceRouteInput and createRouteInput are the calls that point dest in table at m.
func replaceRouteInput(table, dest string, m me) *ec2sdk.ReplaceRouteInput {
	in := &ec2sdk.ReplaceRouteInput{RouteTableId: aws.String(table), DestinationCidrBlock: aws.String(dest)}
	in.InstanceId, in.NetworkInterfaceId = targetOf(m.routeTarget())
	return in
}

func createRouteInput(table, dest string, m me) *ec2sdk.CreateRouteInput {
	in := &ec2sdk.CreateRouteInput{RouteTableId: aws.String(table), DestinationCidrBlock: aws.String(dest)}
	in.InstanceId, in.NetworkInterfaceId = targetOf(m.routeTarget())
	return in
}

// targetOf turns an instance id or an interface id (one of them set) into the call's fields.
func targetOf(instanceID, eni string) (*string, *string) {
	if eni != "" {
		return nil, aws.String(eni)
	}
	return aws.String(instanceID), nil
}
