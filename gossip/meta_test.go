package gossip

import (
	"reflect"
	"strings"
	"testing"
)

func TestMeta_RoundTrip(t *testing.T) {
	in := Meta{Healthy: false, Reason: "egress probe failed", Leaving: true, Groups: map[string]GroupMeta{
		"egress": {Priority: 200, Owns: true, TookUnseen: true}, "az-b": {Priority: 100, Yielded: true},
	}}
	b, err := EncodeMeta(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Healthy != in.Healthy || out.Reason != in.Reason || out.Leaving != in.Leaving || len(out.Groups) != 2 ||
		out.Groups["egress"] != in.Groups["egress"] || out.Groups["az-b"] != in.Groups["az-b"] {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestMeta_TooLarge(t *testing.T) {
	m := Meta{Healthy: true, Groups: map[string]GroupMeta{}}
	for i := 0; i < 40; i++ {
		m.Groups[strings.Repeat("g", 10)+string(rune('a'+i%26))+string(rune('a'+i/26))] = GroupMeta{Priority: 1000}
	}
	if _, err := EncodeMeta(m); err == nil || !strings.Contains(err.Error(), "512-byte limit") {
		t.Fatalf("oversized meta error = %v", err)
	}
}

func TestMeta_DecodeBad(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"Empty", nil, "no metadata"},
		{"FutureVersion", []byte{9, '{', '}'}, "unknown version 9"},
		{"Garbage", []byte{1, 'x'}, "decode node metadata"},
		{"NegativePriority", append([]byte{1}, `{"h":true,"g":{"a":{"p":-1}}}`...), "negative priority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeMeta(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// FuzzDecodeMeta feeds DecodeMeta what a peer could publish. Whatever decodes has no
// negative priority and a group map, and encodes again (when it fits) to bytes that decode
// to the very same Meta: a node re-publishing or comparing metadata never changes it.
func FuzzDecodeMeta(f *testing.F) {
	b, _ := EncodeMeta(Meta{Healthy: true, Groups: map[string]GroupMeta{"egress": {Priority: 1}}})
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeMeta(in)
		if err != nil {
			if len(err.Error()) > 2*len(in)+200 {
				t.Fatalf("error of %d bytes for %d bytes of input", len(err.Error()), len(in))
			}
			return
		}
		if m.Groups == nil {
			t.Fatalf("decoded %q without a group map", in)
		}
		for name, g := range m.Groups {
			if g.Priority < 0 {
				t.Fatalf("group %q decoded with priority %d", name, g.Priority)
			}
		}
		again, err := EncodeMeta(m)
		if err != nil {
			return
		}
		m2, err := DecodeMeta(again)
		if err != nil {
			t.Fatalf("re-decode of %q: %v", again, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the metadata:\n%+v\n%+v", m, m2)
		}
	})
}
