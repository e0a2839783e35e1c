package conntrack

import (
	"errors"
	"testing"
	"time"
)

// wire is a SendFunc that delivers every message into a table per receiver, decoded as a
// receiver would, and counts the packets and their sizes.
type wire struct {
	t       *testing.T
	tables  map[string]*Table
	packets int
	largest map[bool]int
	fail    string
}

func newWire(t *testing.T, names ...string) *wire {
	w := &wire{t: t, tables: map[string]*Table{}, largest: map[bool]int{}}
	for _, n := range names {
		w.tables[n] = NewTable(1 << 20)
	}
	return w
}

func (w *wire) send(to string, b []byte, reliable bool) error {
	if to == w.fail {
		return errors.New("unreachable")
	}
	w.packets++
	w.largest[reliable] = max(w.largest[reliable], len(b))
	m, err := Decode(b)
	if err != nil {
		w.t.Fatalf("sent a message that does not decode: %v", err)
	}
	return w.tables[to].Apply(m, time.Unix(1000, 0))
}

// Changes are coalesced per flow and reach every standby in packets that fit a UDP
// datagram; a resync in parts replaces a standby's view whole.
func TestReplicator(t *testing.T) {
	w := newWire(t, "b", "c")
	r := NewReplicator("i-0123456789abcdef0", w.send)
	for i := range 100 {
		r.Note(Record{Op: OpPut, Flow: flowN(i, 60)})
	}
	r.Note(Record{Op: OpPut, Flow: flowN(5, 300)})  // replaces the first put of 5
	r.Note(Record{Op: OpDelete, Flow: flowN(7, 0)}) // 7 ends before it was ever sent
	if r.Pending() != 100 {
		t.Fatalf("pending = %d, want 100 (one per flow)", r.Pending())
	}
	n, err := r.Flush([]string{"b", "c"})
	if err != nil || n != 100 {
		t.Fatalf("flush = %d, %v", n, err)
	}
	if w.largest[false] > DeltaBytes {
		t.Fatalf("a delta packet of %d bytes", w.largest[false])
	}
	at := time.Unix(1000, 0)
	for _, name := range []string{"b", "c"} {
		got := w.tables[name].Flows("i-0123456789abcdef0", at)
		if len(got) != 99 {
			t.Fatalf("%s holds %d flows, want 99", name, len(got))
		}
		for _, f := range got {
			if f.Src.Port() == 10005 && f.Timeout != 300 {
				t.Fatalf("%s holds the first put of flow 5, not the later", name)
			}
		}
	}
	if n, _ := r.Flush([]string{"b"}); n != 0 {
		t.Fatalf("a second flush sent %d records again", n)
	}

	// A resync of 5000 flows: in parts of at most ResyncBytes, replacing the 99.
	var all []Flow
	for i := range 5000 {
		all = append(all, flowN(1000+i, 120))
	}
	before := w.packets
	if err := r.Resync([]string{"b"}, all); err != nil {
		t.Fatal(err)
	}
	if parts := w.packets - before; parts < 2 || w.largest[true] > ResyncBytes {
		t.Fatalf("resync went in %d parts, the largest %d bytes", parts, w.largest[true])
	}
	if got := w.tables["b"].Flows("i-0123456789abcdef0", at); len(got) != 5000 {
		t.Fatalf("b holds %d flows after the resync, want 5000", len(got))
	}
	// An empty table resyncs too: the standby then holds nothing of this node.
	if err := r.Resync([]string{"b"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := w.tables["b"].Flows("i-0123456789abcdef0", at); len(got) != 0 {
		t.Fatalf("b holds %d flows after an empty resync", len(got))
	}
	// A standby that cannot be reached is named; the others still get theirs.
	w.fail = "c"
	r.Note(Record{Op: OpPut, Flow: flowN(1, 60)})
	if _, err := r.Flush([]string{"c", "b"}); err == nil {
		t.Fatal("a failed send was not reported")
	}
	if got := w.tables["b"].Flows("i-0123456789abcdef0", at); len(got) != 1 {
		t.Fatalf("b missed the flush that c failed: holds %d", len(got))
	}
}
