package conntrack

import (
	"net/netip"
	"reflect"
	"testing"
)

func sampleFlows() []Record {
	return []Record{
		{Op: OpPut, Flow: Flow{Proto: TCP, Src: netip.MustParseAddrPort("198.18.1.100:40000"), Dst: netip.MustParseAddrPort("198.19.0.1:443"),
			NAT: netip.MustParseAddrPort("198.18.1.11:40000"), Status: StatusSeenReply | StatusAssured, TCPState: TCPEstablished, Timeout: 431999}},
		{Op: OpDelete, Flow: Flow{Proto: UDP, Src: netip.MustParseAddrPort("198.18.1.100:53000"), Dst: netip.MustParseAddrPort("198.19.0.1:53")}},
		{Op: OpPut, Flow: Flow{Proto: UDP, Src: netip.MustParseAddrPort("198.18.1.101:5000"), Dst: netip.MustParseAddrPort("198.19.0.1:7"),
			NAT: netip.MustParseAddrPort("198.18.1.11:61001"), Status: StatusSeenReply, Timeout: 30}},
	}
}

// What Encode frames, Decode reads back the same, for both kinds.
func TestWire_RoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Kind: KindDelta, Sender: "i-0123456789abcdef0", Records: sampleFlows()},
		{Kind: KindResync, Sender: "i-0123456789abcdef0", Generation: 7, Part: 2, Parts: 3, Records: sampleFlows()},
		{Kind: KindResync, Sender: "i-1", Generation: 8, Part: 0, Parts: 1},
	} {
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if max := HeaderSize(m.Sender) + len(m.Records)*RecordSize; len(b) > max {
			t.Errorf("%d bytes, more than the %d HeaderSize and RecordSize allow", len(b), max)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("decoded\n%+v\nwant\n%+v", got, m)
		}
	}
}

// Every cut of a good message, and every bad header, is an error, never a partial message.
func TestWire_Refuses(t *testing.T) {
	good, err := Encode(Message{Kind: KindResync, Sender: "i-1", Generation: 1, Part: 0, Parts: 1, Records: sampleFlows()})
	if err != nil {
		t.Fatal(err)
	}
	ends := map[int]bool{}
	for n, off := 0, HeaderSize("i-1"); n <= len(sampleFlows()); n++ {
		ends[off] = true
		if n < len(sampleFlows()) {
			off += 1 + keyLen
			if sampleFlows()[n].Op == OpPut {
				off += putLen
			}
		}
	}
	for i := 0; i < len(good); i++ {
		if ends[i] {
			continue // a whole number of records: a shorter good message
		}
		if m, err := Decode(good[:i]); err == nil {
			t.Errorf("cut at %d of %d bytes decoded: %+v", i, len(good), m)
		}
	}
	bad := func(name string, f func(b []byte) []byte) {
		b := f(append([]byte(nil), good...))
		if m, err := Decode(b); err == nil {
			t.Errorf("%s decoded: %+v", name, m)
		}
	}
	bad("other magic", func(b []byte) []byte { b[0] = 'X'; return b })
	bad("other version", func(b []byte) []byte { b[1] = 2; return b })
	bad("unknown kind", func(b []byte) []byte { b[2] = 9; return b })
	bad("part beyond parts", func(b []byte) []byte { b[4+3+5] = 1; return b })
	bad("unknown op", func(b []byte) []byte { b[HeaderSize("i-1")] = 7; return b })
	bad("unknown protocol", func(b []byte) []byte { b[HeaderSize("i-1")+1] = 1; return b })
	if _, err := Encode(Message{Kind: KindDelta, Sender: "", Records: sampleFlows()}); err == nil {
		t.Error("a message without a sender was encoded")
	}
	if _, err := Encode(Message{Kind: KindDelta, Sender: "i-1", Records: []Record{{Op: OpPut, Flow: Flow{Proto: TCP,
		Src: netip.MustParseAddrPort("198.18.1.100:1"), Dst: netip.MustParseAddrPort("198.19.0.1:2")}}}}); err == nil {
		t.Error("a put without a NAT address was encoded")
	}
}

// FuzzDecode: no input makes Decode panic, and what it accepts encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Kind: KindDelta, Sender: "i-0123456789abcdef0", Records: sampleFlows()},
		{Kind: KindResync, Sender: "i-1", Generation: 3, Part: 1, Parts: 2, Records: sampleFlows()[:1]},
	} {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		m2, err := Decode(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoded message decodes to %+v (%v), want %+v", m2, err, m)
		}
	})
}
