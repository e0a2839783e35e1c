package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"
)

// MaxMetaSize is memberlist's limit on node metadata; a larger value would make it panic.
const MaxMetaSize = 512

// metaVersion is the first byte of every encoded Meta, so that a later encoding can be told
// apart from this one and a node never misreads a newer peer.
const metaVersion byte = 1

// Meta is what a node tells its peers about itself through memberlist's node metadata.
type Meta struct {
	// Healthy is false when the node must not own any group; Reason says why.
	Healthy bool
	Reason  string
	// Leaving is set just before a graceful shutdown, so peers can tell a handover from a death.
	Leaving bool
	// LeavingSince is when the shutdown began (this node's clock, to the millisecond). Peers
	// believe Leaving only while it is recent, so that a captured announcement replayed
	// later (memberlist has no replay protection across restarts) moves nothing.
	LeavingSince time.Time
	// Groups is this node's standing in each group it serves.
	Groups map[string]GroupMeta
	// Started is when the node's current run began (its clock, to the millisecond); Gossip
	// sets it. It orders a node's metadata across its restarts, which memberlist does not.
	Started time.Time
}

// GroupMeta is a node's standing in one group.
type GroupMeta struct {
	Priority int
	Yielded  bool
	Owns     bool
	// TookUnseen: this node owns the group because it took it from an owner it could not
	// reach, and it still cannot reach that owner. The owner that lost the group reads it as
	// "a partition, not a death": it does not take the group back while this stays set.
	TookUnseen bool
	// NoRoom: this node cannot hold the group's Elastic IP, its interface having too few
	// private addresses for it beside the other groups' (it is not eligible for the group).
	NoRoom bool
}

// wireMeta keeps the encoded form short: metadata travels in every alive message.
type wireMeta struct {
	H  bool                     `json:"h"`
	R  string                   `json:"r,omitempty"`
	L  bool                     `json:"l,omitempty"`
	LS int64                    `json:"ls,omitempty"`
	ST int64                    `json:"st,omitempty"`
	G  map[string]wireGroupMeta `json:"g,omitempty"`
}

type wireGroupMeta struct {
	P int  `json:"p"`
	Y bool `json:"y,omitempty"`
	O bool `json:"o,omitempty"`
	U bool `json:"u,omitempty"`
	A bool `json:"a,omitempty"`
}

// EncodeMeta returns the wire form of m, or an error when it would not fit in MaxMetaSize.
func EncodeMeta(m Meta) ([]byte, error) {
	w := wireMeta{H: m.Healthy, R: m.Reason, L: m.Leaving}
	if !m.LeavingSince.IsZero() {
		w.LS = m.LeavingSince.UnixMilli()
	}
	if !m.Started.IsZero() {
		w.ST = m.Started.UnixMilli()
	}
	if len(m.Groups) > 0 {
		w.G = make(map[string]wireGroupMeta, len(m.Groups))
		for name, g := range m.Groups {
			w.G[name] = wireGroupMeta{P: g.Priority, Y: g.Yielded, O: g.Owns, U: g.TookUnseen, A: g.NoRoom}
		}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	out := append([]byte{metaVersion}, body...)
	if len(out) > MaxMetaSize {
		return nil, fmt.Errorf("encode node metadata: %d bytes is over the %d-byte limit (shorten group names or the health reason)", len(out), MaxMetaSize)
	}
	return out, nil
}

// ErrNoMeta is returned by DecodeMeta for a node that published no metadata (not an agent).
var ErrNoMeta = errors.New("node has no metadata")

// DecodeMeta parses metadata received from a peer. Anything malformed is an error; the caller
// treats such a peer as not eligible to own anything.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, ErrNoMeta
	}
	if b[0] != metaVersion {
		return Meta{}, fmt.Errorf("decode node metadata: unknown version %d (this agent speaks %d)", b[0], metaVersion)
	}
	var w wireMeta
	if err := json.Unmarshal(b[1:], &w); err != nil {
		return Meta{}, fmt.Errorf("decode node metadata: %w", err)
	}
	m := Meta{Healthy: w.H, Reason: w.R, Leaving: w.L, Groups: make(map[string]GroupMeta, len(w.G))}
	if w.LS > 0 {
		m.LeavingSince = time.UnixMilli(w.LS)
	}
	if w.ST > 0 {
		m.Started = time.UnixMilli(w.ST)
	}
	for name, g := range w.G {
		if g.P < 0 {
			return Meta{}, fmt.Errorf("decode node metadata: group %q has negative priority %d", name, g.P)
		}
		m.Groups[name] = GroupMeta{Priority: g.P, Yielded: g.Y, Owns: g.O, TookUnseen: g.U, NoRoom: g.A}
	}
	return m, nil
}

// GroupNames returns the names of m's groups in sorted order.
func (m Meta) GroupNames() []string {
	names := make([]string, 0, len(m.Groups))
	for n := range m.Groups {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
