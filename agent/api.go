package agent

import (
	"context"
	"errors"
	"time"
)

// Controller is what the control socket serves: the operations an operator can ask of a
// running agent. The agent implements it by handing each request to its run loop.
type Controller interface {
	// Members lists every peer this agent knows, itself included.
	Members(ctx context.Context) ([]MemberView, error)
	// Status reports, per group, who should own it and what EC2 says about it.
	Status(ctx context.Context) (StatusView, error)
	// Yield hands the named groups (all when empty) to the next peer by priority and keeps
	// this node from reclaiming them until Resume or a restart.
	Yield(ctx context.Context, groups []string) (ActionResult, error)
	// Resume clears a yield on the named groups (all when empty).
	Resume(ctx context.Context, groups []string) (ActionResult, error)
	// Takeover makes this node the owner of the named groups (all when empty) now.
	Takeover(ctx context.Context, groups []string) (ActionResult, error)
}

// ErrUnknownGroup is returned when a request names a group the agent does not manage.
var ErrUnknownGroup = errors.New("unknown group")

// MemberView is one peer as the members command shows it.
type MemberView struct {
	Name    string            `json:"name"`
	Address string            `json:"address"`
	State   string            `json:"state"` // alive, suspect, dead, left
	Self    bool              `json:"self"`
	Healthy bool              `json:"healthy"`
	Reason  string            `json:"reason,omitempty"` // why not healthy
	Groups  []MemberGroupView `json:"groups"`
}

// MemberGroupView is a member's standing in one group.
type MemberGroupView struct {
	Name     string `json:"name"`
	Priority int    `json:"priority"`
	Yielded  bool   `json:"yielded"`
	Owns     bool   `json:"owns"`
	// Ineligible says why the member cannot hold the group's Elastic IP (too few private
	// addresses on its interface); "" when it can.
	Ineligible string `json:"ineligible,omitempty"`
}

// StatusView is the status command's answer.
type StatusView struct {
	Node    string      `json:"node"`
	Version string      `json:"version"`
	Groups  []GroupView `json:"groups"`
	// ConntrackSync is the state of connection sync; nil when it is off.
	ConntrackSync *SyncView `json:"conntrack_sync,omitempty"`
}

// SyncView is what connection sync holds and has done.
type SyncView struct {
	// Sending: this node owns a group and sends its flows to the peers.
	Sending bool `json:"sending"`
	// Held is how many flows this node holds of each peer.
	Held map[string]int `json:"held"`
	// Dropped counts flows refused because max_flows was reached.
	Dropped uint64 `json:"dropped"`
	// Installed counts flows installed on takeovers since the start.
	Installed uint64 `json:"installed"`
}

// GroupView is one group's state as this agent sees it.
type GroupView struct {
	Name         string `json:"name"`
	DesiredOwner string `json:"desired_owner"`
	// Ineligible says why this node cannot hold the group's Elastic IP; "" when it can.
	Ineligible   string        `json:"ineligible,omitempty"`
	EC2Owner     string        `json:"ec2_owner"`
	Yielded      bool          `json:"yielded"`
	ElasticIP    EIPView       `json:"elastic_ip"`
	Routes       []RouteView   `json:"routes"`
	ObservedAt   time.Time     `json:"observed_at"`
	ObserveError string        `json:"observe_error,omitempty"`
	LastTakeover *TakeoverView `json:"last_takeover,omitempty"`
}

// EIPView is what EC2 reports for a group's Elastic IP.
type EIPView struct {
	AllocationID string `json:"allocation_id"`
	PublicIP     string `json:"public_ip"`
	InstanceID   string `json:"instance_id"`
	// PrivateIP is the private address it is associated with.
	PrivateIP string `json:"private_ip,omitempty"`
}

// RouteView is what EC2 reports for one managed route.
type RouteView struct {
	RouteTableID string `json:"route_table_id"`
	Destination  string `json:"destination"`
	Target       string `json:"target"` // instance id, eni id, or "" when missing
	State        string `json:"state"`  // active, blackhole, missing
}

// TakeoverView describes one claim by this node. The trigger (the owner's death as gossip
// reported it, an unhealthy or yielded owner, an operator's request) was seen Detected before
// Started; the other durations count from Started.
type TakeoverView struct {
	Group       string        `json:"group"`
	From        string        `json:"from"`
	To          string        `json:"to"`
	Reason      string        `json:"reason"`
	Started     time.Time     `json:"started"`
	Detected    time.Duration `json:"detected"`     // trigger seen this long before Started
	Confirmed   time.Duration `json:"confirmed"`    // the direct-probe confirmation took this long (0: none needed)
	EIPMoved    time.Duration `json:"eip_moved"`    // since Started
	RoutesMoved time.Duration `json:"routes_moved"` // since Started
	Verified    time.Duration `json:"verified"`     // since Started
	Error       string        `json:"error,omitempty"`
}

// ActionResult answers yield, resume and takeover.
type ActionResult struct {
	Groups  []string `json:"groups"`
	Message string   `json:"message"`
}
