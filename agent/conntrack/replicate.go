package conntrack

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sizes of what a replicator sends: a delta goes in one UDP packet (memberlist's limit,
// less its encryption and framing), a resync part over TCP.
const (
	DeltaBytes  = 1200
	ResyncBytes = 64 << 10
)

// SendFunc sends one message to the member called to: best effort (one UDP packet) or
// reliably (a TCP stream).
type SendFunc func(to string, msg []byte, reliable bool) error

// Replicator sends this node's masqueraded flows to the standbys: the changes noted since
// the last Flush, coalesced per flow, and the whole table on Resync.
type Replicator struct {
	self string
	send SendFunc

	mu      sync.Mutex
	pending map[key]Record
	order   []key
	gen     uint32
}

// NewReplicator returns a replicator that sends as self.
func NewReplicator(self string, send SendFunc) *Replicator {
	return &Replicator{self: self, send: send, pending: map[key]Record{}}
}

// Note records a change to send with the next Flush; a later change to the same flow
// replaces an earlier one.
func (r *Replicator) Note(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := keyOf(rec.Flow)
	if _, ok := r.pending[k]; !ok {
		r.order = append(r.order, k)
	}
	r.pending[k] = rec
}

// Pending returns how many flows wait for the next Flush.
func (r *Replicator) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Flush sends the changes noted since the last Flush to every member of to, in as many
// packets as they need, and returns how many records went out. A member a packet could not
// be sent to is named in the error; it gets the flows again with the next resync.
func (r *Replicator) Flush(to []string) (int, error) {
	r.mu.Lock()
	recs := make([]Record, 0, len(r.order))
	for _, k := range r.order {
		recs = append(recs, r.pending[k])
	}
	r.pending, r.order = map[key]Record{}, nil
	r.mu.Unlock()
	if len(recs) == 0 || len(to) == 0 {
		return 0, nil
	}
	msgs, err := r.frame(Message{Kind: KindDelta, Sender: r.self}, recs, DeltaBytes)
	if err != nil {
		return 0, err
	}
	return len(recs), r.sendAll(to, msgs, false)
}

// Resync sends flows, the whole table as this node has it now, to every member of to.
func (r *Replicator) Resync(to []string, flows []Flow) error {
	if len(to) == 0 {
		return nil
	}
	r.mu.Lock()
	// Generations only move forward, across restarts too: they start at the clock.
	r.gen = max(r.gen+1, uint32(time.Now().Unix()))
	gen := r.gen
	r.mu.Unlock()
	recs := make([]Record, len(flows))
	for i, f := range flows {
		recs[i] = Record{Op: OpPut, Flow: f}
	}
	msgs, err := r.frame(Message{Kind: KindResync, Sender: r.self, Generation: gen}, recs, ResyncBytes)
	if err != nil {
		return err
	}
	return r.sendAll(to, msgs, true)
}

// frame splits recs into messages like head of at most size bytes each; a resync of no
// flows is one empty part.
func (r *Replicator) frame(head Message, recs []Record, size int) ([][]byte, error) {
	per := (size - HeaderSize(head.Sender)) / RecordSize
	if per < 1 {
		return nil, fmt.Errorf("sender name %q leaves no room for a record", head.Sender)
	}
	parts := max(1, (len(recs)+per-1)/per)
	if parts > 1<<16-1 {
		return nil, fmt.Errorf("%d flows are more than one resync carries", len(recs))
	}
	var out [][]byte
	for i := range parts {
		m := head
		m.Records = recs[i*per : min(len(recs), (i+1)*per)]
		if head.Kind == KindResync {
			m.Part, m.Parts = uint16(i), uint16(parts)
		}
		b, err := Encode(m)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (r *Replicator) sendAll(to []string, msgs [][]byte, reliable bool) error {
	var errs []error
	for _, name := range to {
		for _, b := range msgs {
			if err := r.send(name, b, reliable); err != nil {
				errs = append(errs, fmt.Errorf("send to %s: %w", name, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}
