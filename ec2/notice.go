package ec2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The metadata paths that announce the end of an instance. Each answers 404 while there is
// nothing to announce.
const (
	SpotActionPath      = "spot/instance-action"
	RebalancePath       = "events/recommendations/rebalance"
	MaintenancePath     = "events/maintenance/scheduled"
	LifecycleStatePath  = "autoscaling/target-lifecycle-state"
	noticeAnswerLimit   = 64 << 10
	noticeAttemptBudget = time.Second
)

// LifecycleTerminated is the Auto Scaling target lifecycle state of an instance about to be
// terminated.
const LifecycleTerminated = "Terminated"

// Notices is one reading of the advance notices the instance metadata service gives of the
// instance's end. A zero field means the service announced nothing of that kind.
type Notices struct {
	// Spot is the spot interruption notice: two minutes' warning of a stop, hibernation or
	// termination.
	Spot *SpotAction
	// Rebalance is when EC2 recommended rebalancing: the spot instance is at an elevated
	// risk of interruption.
	Rebalance time.Time
	// Maintenance are the scheduled events (reboots, stops, retirements) not completed or
	// canceled.
	Maintenance []MaintenanceEvent
	// LifecycleState is the Auto Scaling target lifecycle state ("" outside a group).
	LifecycleState string
}

// SpotAction is a spot interruption notice.
type SpotAction struct {
	// Action is terminate, stop or hibernate.
	Action string
	// Time is when the action happens.
	Time time.Time
}

// MaintenanceEvent is one scheduled event of the instance.
type MaintenanceEvent struct {
	Code, Description, State, EventID string
	// NotBefore is the earliest time the event starts.
	NotBefore time.Time
	// NotAfter is the latest time it ends (zero when EC2 gave none).
	NotAfter time.Time
}

// NoticeReader reads the advance notices from the instance metadata service (IMDSv2).
type NoticeReader struct {
	client   *imds.Client
	endpoint string
}

// NewNoticeReader returns a reader of the metadata service at endpoint ("" is the default).
// Every request is given one attempt of a second: the caller polls, so the next poll is the
// retry, and an unreachable service must not hold a poll up.
func NewNoticeReader(endpoint string) *NoticeReader {
	shown := endpoint
	if shown == "" {
		shown = DefaultIMDSEndpoint
	}
	// One attempt: the next poll is the retry. A poll every few seconds needs no idle
	// connection kept between polls (nor one left behind when the agent stops).
	return &NoticeReader{endpoint: shown, client: newIMDSClient(endpoint, noticeAttemptBudget, 1, false)}
}

// Endpoint is the metadata service's base URL.
func (r *NoticeReader) Endpoint() string { return r.endpoint }

// ReadNotices asks the metadata service for every kind of notice. A path that answers 404
// announces nothing. It returns what it could read together with an error naming each path
// that could not be read or parsed; when the service does not answer at all the error
// wraps ErrMetadataUnreachable.
func (r *NoticeReader) ReadNotices(ctx context.Context) (Notices, error) {
	var n Notices
	var errs []error
	for _, p := range []struct {
		path  string
		parse func(string) error
	}{
		{SpotActionPath, func(s string) (err error) { n.Spot, err = ParseSpotAction(s); return err }},
		{RebalancePath, func(s string) (err error) { n.Rebalance, err = ParseRebalance(s); return err }},
		{MaintenancePath, func(s string) (err error) { n.Maintenance, err = ParseMaintenance(s); return err }},
		{LifecycleStatePath, func(s string) (err error) { n.LifecycleState, err = ParseLifecycleState(s); return err }},
	} {
		body, found, err := r.get(ctx, p.path)
		if err != nil {
			if errors.Is(err, ErrMetadataUnreachable) {
				// Asking the next paths would only add a timeout each.
				return n, err
			}
			errs = append(errs, err)
			continue
		}
		if !found {
			continue
		}
		if err := p.parse(body); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.path, err))
		}
	}
	return n, errors.Join(errs...)
}

// ErrMetadataUnreachable is a metadata service that did not answer at all.
var ErrMetadataUnreachable = errors.New("instance metadata unreachable")

// get returns the answer at path, found false on 404.
func (r *NoticeReader) get(ctx context.Context, path string) (string, bool, error) {
	out, err := r.client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return "", false, nil
		}
		if isUnreachable(err) {
			return "", false, fmt.Errorf("%w at %s: %w", ErrMetadataUnreachable, r.endpoint, err)
		}
		return "", false, fmt.Errorf("get %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, noticeAnswerLimit))
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	return string(b), true, nil
}

// ParseSpotAction parses the answer of spot/instance-action, for example
// {"action": "terminate", "time": "2017-09-18T08:22:00Z"}.
func ParseSpotAction(s string) (*SpotAction, error) {
	var v struct {
		Action string `json:"action"`
		Time   string `json:"time"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("not a spot instance action: %w", err)
	}
	switch v.Action {
	case "terminate", "stop", "hibernate":
	default:
		return nil, fmt.Errorf("unknown spot instance action %.40q", v.Action)
	}
	t, err := time.Parse(time.RFC3339, v.Time)
	if err != nil {
		return nil, fmt.Errorf("spot instance action time %.40q: %w", v.Time, err)
	}
	return &SpotAction{Action: v.Action, Time: t}, nil
}

// ParseRebalance parses the answer of events/recommendations/rebalance, for example
// {"noticeTime": "2020-10-27T08:22:00Z"}.
func ParseRebalance(s string) (time.Time, error) {
	var v struct {
		NoticeTime string `json:"noticeTime"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return time.Time{}, fmt.Errorf("not a rebalance recommendation: %w", err)
	}
	t, err := time.Parse(time.RFC3339, v.NoticeTime)
	if err != nil {
		return time.Time{}, fmt.Errorf("rebalance notice time %.40q: %w", v.NoticeTime, err)
	}
	return t, nil
}

// maintenanceTimeLayout is how scheduled events write their times: "21 Jan 2019 09:00:43 GMT".
const maintenanceTimeLayout = "2 Jan 2006 15:04:05 GMT"

// ParseMaintenance parses the answer of events/maintenance/scheduled, a JSON list of events,
// and keeps those not completed or canceled.
func ParseMaintenance(s string) ([]MaintenanceEvent, error) {
	var vs []struct {
		Code, Description, State, EventID string
		NotBefore, NotAfter               string
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(s), &vs); err != nil {
		return nil, fmt.Errorf("not a list of scheduled events: %w", err)
	}
	var out []MaintenanceEvent
	for _, v := range vs {
		if v.State == "completed" || v.State == "canceled" {
			continue
		}
		e := MaintenanceEvent{Code: v.Code, Description: v.Description, State: v.State, EventID: v.EventID}
		var err error
		if e.NotBefore, err = time.ParseInLocation(maintenanceTimeLayout, v.NotBefore, time.UTC); err != nil {
			return nil, fmt.Errorf("scheduled event %.40q: NotBefore %.40q: %w", v.EventID, v.NotBefore, err)
		}
		if v.NotAfter != "" {
			if e.NotAfter, err = time.ParseInLocation(maintenanceTimeLayout, v.NotAfter, time.UTC); err != nil {
				return nil, fmt.Errorf("scheduled event %.40q: NotAfter %.40q: %w", v.EventID, v.NotAfter, err)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// ParseLifecycleState parses the answer of autoscaling/target-lifecycle-state, a single word
// such as InService or Terminated.
func ParseLifecycleState(s string) (string, error) {
	v := strings.TrimSpace(s)
	if v == "" || len(v) > 64 || strings.ContainsFunc(v, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == ':')
	}) {
		return "", fmt.Errorf("not a lifecycle state: %.40q", v)
	}
	return v, nil
}
