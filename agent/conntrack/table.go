package conntrack

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// key is a flow's identity: its protocol and original tuple.
type key struct {
	proto    uint8
	src, dst netip.AddrPort
}

func keyOf(f Flow) key { return key{f.Proto, f.Src, f.Dst} }

// entry is a flow as a standby holds it, until its timeout runs out without news.
type entry struct {
	flow    Flow
	expires time.Time
}

// resync is a sender's whole table being put together from its parts.
type resync struct {
	generation uint32
	parts      uint16
	got        map[uint16]bool
	flows      map[key]entry
	// deltas are what came from the sender while the parts were arriving: newer than the
	// snapshot, they are applied again on top of it.
	deltas []Record
	at     []time.Time
}

// TableStats counts what a table holds and what it refused.
type TableStats struct {
	Flows int
	// Dropped counts puts refused because the table was full.
	Dropped uint64
	// Resyncs counts whole tables received.
	Resyncs uint64
}

// Table holds what a standby knows of its peers' masqueraded flows, per sender, at most max
// flows in all: a put beyond that is dropped and counted, never an unbounded table.
type Table struct {
	mu       sync.Mutex
	max      int
	senders  map[string]map[key]entry
	pending  map[string]*resync
	complete map[string]uint32 // the last whole generation per sender
	n        int
	swept    time.Time
	dropped  uint64
	resyncs  uint64
	sweepGap time.Duration
}

// NewTable returns a table of at most max flows.
func NewTable(max int) *Table {
	return &Table{max: max, senders: map[string]map[key]entry{}, pending: map[string]*resync{}, complete: map[string]uint32{}, sweepGap: time.Second}
}

// Apply takes one message in, received at now.
func (t *Table) Apply(m Message, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	switch m.Kind {
	case KindDelta:
		if p := t.pending[m.Sender]; p != nil && len(p.deltas)+len(m.Records) <= t.max {
			p.deltas = append(p.deltas, m.Records...)
			for range m.Records {
				p.at = append(p.at, now)
			}
		}
		flows := t.senders[m.Sender]
		if flows == nil {
			flows = map[key]entry{}
			t.senders[m.Sender] = flows
		}
		for _, r := range m.Records {
			t.apply(flows, r, now)
		}
	case KindResync:
		// Generations only move forward (serial number order): a part of an older one than
		// being put together, or than the last complete one, is stale.
		p := t.pending[m.Sender]
		if done, ok := t.complete[m.Sender]; ok && int32(m.Generation-done) <= 0 {
			return nil
		}
		if p != nil && int32(m.Generation-p.generation) < 0 {
			return nil
		}
		if p == nil || p.generation != m.Generation {
			p = &resync{generation: m.Generation, parts: m.Parts, got: map[uint16]bool{}, flows: map[key]entry{}}
			t.pending[m.Sender] = p
		}
		if m.Parts != p.parts {
			return fmt.Errorf("resync %d from %s: part %d says %d parts, an earlier one %d", m.Generation, m.Sender, m.Part, m.Parts, p.parts)
		}
		p.got[m.Part] = true
		for _, r := range m.Records {
			if r.Op == OpPut && len(p.flows) < t.max {
				p.flows[keyOf(r.Flow)] = entry{r.Flow, now.Add(time.Duration(r.Flow.Timeout) * time.Second)}
			}
		}
		if len(p.got) < int(p.parts) {
			return nil
		}
		// Every part is in: the snapshot replaces what was held of the sender, within the
		// bound, and what came since it was taken goes on top.
		delete(t.pending, m.Sender)
		t.complete[m.Sender] = m.Generation
		t.n -= len(t.senders[m.Sender])
		flows := make(map[key]entry, len(p.flows))
		t.senders[m.Sender] = flows
		for k, e := range p.flows {
			if t.n >= t.max {
				t.dropped += uint64(len(p.flows) - len(flows))
				break
			}
			flows[k] = e
			t.n++
		}
		for i, r := range p.deltas {
			t.apply(flows, r, p.at[i])
		}
		t.resyncs++
	default:
		return fmt.Errorf("unknown message kind %d from %s", m.Kind, m.Sender)
	}
	return nil
}

// apply puts or deletes one flow of a sender's.
func (t *Table) apply(flows map[key]entry, r Record, now time.Time) {
	k := keyOf(r.Flow)
	_, had := flows[k]
	switch r.Op {
	case OpDelete:
		if had {
			delete(flows, k)
			t.n--
		}
	case OpPut:
		if !had && t.n >= t.max {
			t.dropped++
			return
		}
		flows[k] = entry{r.Flow, now.Add(time.Duration(r.Flow.Timeout) * time.Second)}
		if !had {
			t.n++
		}
	}
}

// sweep drops expired flows, at most once per sweepGap.
func (t *Table) sweep(now time.Time) {
	if now.Sub(t.swept) < t.sweepGap {
		return
	}
	t.swept = now
	for _, flows := range t.senders {
		for k, e := range flows {
			if !now.Before(e.expires) {
				delete(flows, k)
				t.n--
			}
		}
	}
}

// Flows returns the flows sender masqueraded that have not timed out by now, each with the
// time it has left.
func (t *Table) Flows(sender string, now time.Time) []Flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Flow
	for _, e := range t.senders[sender] {
		left := e.expires.Sub(now)
		if left <= 0 {
			continue
		}
		f := e.flow
		f.Timeout = uint32((left + time.Second - 1) / time.Second)
		out = append(out, f)
	}
	return out
}

// Forget drops everything held of sender.
func (t *Table) Forget(sender string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n -= len(t.senders[sender])
	delete(t.senders, sender)
	delete(t.pending, sender)
	delete(t.complete, sender)
}

// Senders returns how many flows are held of each sender.
func (t *Table) Senders() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.senders))
	for name, flows := range t.senders {
		if len(flows) > 0 {
			out[name] = len(flows)
		}
	}
	return out
}

// Stats returns the table's counters.
func (t *Table) Stats() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TableStats{Flows: t.n, Dropped: t.dropped, Resyncs: t.resyncs}
}
