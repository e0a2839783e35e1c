package conntrack

import (
	"net/netip"
	"sort"
	"testing"
	"time"
)

func flowN(i int, timeout uint32) Flow {
	return Flow{Proto: UDP, Src: netip.AddrPortFrom(netip.MustParseAddr("198.18.1.100"), uint16(10000+i)),
		Dst: netip.MustParseAddrPort("198.19.0.1:53"), NAT: netip.AddrPortFrom(netip.MustParseAddr("198.18.1.11"), uint16(20000+i)),
		Status: StatusSeenReply, Timeout: timeout}
}

func put(fs ...Flow) []Record {
	var rs []Record
	for _, f := range fs {
		rs = append(rs, Record{Op: OpPut, Flow: f})
	}
	return rs
}

func ports(fs []Flow) []int {
	var out []int
	for _, f := range fs {
		out = append(out, int(f.Src.Port())-10000)
	}
	sort.Ints(out)
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mustApply(t *testing.T, tb *Table, m Message, now time.Time) {
	t.Helper()
	if err := tb.Apply(m, now); err != nil {
		t.Fatal(err)
	}
}

// Deltas put and delete flows per sender; a flow is gone once its timeout has run out
// without news, and what is returned carries the time it has left.
func TestTable_DeltasAndExpiry(t *testing.T) {
	tb := NewTable(100)
	t0 := time.Unix(1000, 0)
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: put(flowN(1, 30), flowN(2, 300), flowN(3, 300))}, t0)
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "b", Records: put(flowN(9, 300))}, t0)
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: []Record{{Op: OpDelete, Flow: flowN(3, 0)}}}, t0)
	if got := ports(tb.Flows("a", t0)); !equalInts(got, []int{1, 2}) {
		t.Fatalf("a's flows = %v, want [1 2]", got)
	}
	later := t0.Add(40 * time.Second)
	got := tb.Flows("a", later)
	if !equalInts(ports(got), []int{2}) || got[0].Timeout != 260 {
		t.Fatalf("a's flows 40 s later = %+v, want flow 2 with 260 s left", got)
	}
	// News renews a flow.
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: put(flowN(2, 300))}, later)
	if got := tb.Flows("a", later.Add(280*time.Second)); !equalInts(ports(got), []int{2}) {
		t.Fatalf("renewed flow gone: %v", got)
	}
	tb.Forget("a")
	if tb.Flows("a", later) != nil || tb.Stats().Flows != 1 {
		t.Fatalf("after Forget: a has %v, table %+v", tb.Flows("a", later), tb.Stats())
	}
}

// The table never holds more than its bound: puts beyond it are dropped and counted, and
// expired flows make room again.
func TestTable_Bound(t *testing.T) {
	tb := NewTable(3)
	t0 := time.Unix(1000, 0)
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: put(flowN(1, 10), flowN(2, 300), flowN(3, 300), flowN(4, 300))}, t0)
	if st := tb.Stats(); st.Flows != 3 || st.Dropped != 1 {
		t.Fatalf("stats = %+v, want 3 flows and 1 dropped", st)
	}
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: put(flowN(2, 300))}, t0)
	if st := tb.Stats(); st.Flows != 3 || st.Dropped != 1 {
		t.Fatalf("a put of a held flow was counted: %+v", st)
	}
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "b", Records: put(flowN(5, 300))}, t0.Add(20*time.Second))
	if got := ports(tb.Flows("b", t0.Add(20*time.Second))); !equalInts(got, []int{5}) {
		t.Fatalf("no room made by the expired flow: b has %v, stats %+v", got, tb.Stats())
	}
}

// A resync replaces what was held of its sender once every part is in; deltas that came
// while the parts arrived stay on top; a newer generation discards an older one.
func TestTable_Resync(t *testing.T) {
	tb := NewTable(100)
	t0 := time.Unix(1000, 0)
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: put(flowN(1, 300), flowN(2, 300))}, t0)
	mustApply(t, tb, Message{Kind: KindResync, Sender: "a", Generation: 1, Part: 0, Parts: 2, Records: put(flowN(3, 300))}, t0)
	// Generation 2 starts before 1 is complete: 1 is dropped, and its late part ignored.
	mustApply(t, tb, Message{Kind: KindResync, Sender: "a", Generation: 2, Part: 1, Parts: 2, Records: put(flowN(4, 300), flowN(6, 300))}, t0)
	mustApply(t, tb, Message{Kind: KindResync, Sender: "a", Generation: 1, Part: 1, Parts: 2, Records: put(flowN(5, 300))}, t0)
	if got := ports(tb.Flows("a", t0)); !equalInts(got, []int{1, 2}) {
		t.Fatalf("before any resync is complete: a has %v, want [1 2]", got)
	}
	// While generation 2 is incomplete a delta arrives: a new flow and the end of flow 6.
	mustApply(t, tb, Message{Kind: KindDelta, Sender: "a", Records: append(put(flowN(7, 300)), Record{Op: OpDelete, Flow: flowN(6, 0)})}, t0)
	mustApply(t, tb, Message{Kind: KindResync, Sender: "a", Generation: 2, Part: 0, Parts: 2, Records: put(flowN(8, 300))}, t0)
	if got := ports(tb.Flows("a", t0)); !equalInts(got, []int{4, 7, 8}) {
		t.Fatalf("after resync 2: a has %v, want [4 7 8]", got)
	}
	if st := tb.Stats(); st.Flows != 3 || st.Resyncs != 1 {
		t.Fatalf("stats = %+v, want 3 flows, 1 resync", st)
	}
	// A stale part of generation 2 after it was complete changes nothing.
	mustApply(t, tb, Message{Kind: KindResync, Sender: "a", Generation: 2, Part: 1, Parts: 2, Records: put(flowN(9, 300))}, t0)
	if got := ports(tb.Flows("a", t0)); !equalInts(got, []int{4, 7, 8}) {
		t.Fatalf("a stale part was taken: a has %v", got)
	}
	if err := tb.Apply(Message{Kind: KindResync, Sender: "a", Generation: 3, Part: 0, Parts: 2}, t0); err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(Message{Kind: KindResync, Sender: "a", Generation: 3, Part: 1, Parts: 3}, t0); err == nil {
		t.Fatal("parts of one generation that disagree on their count were taken")
	}
}
