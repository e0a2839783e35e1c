package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/natganker/natganker/gossip"
)

func TestSameMeta(t *testing.T) {
	at := time.Date(2026, 12, 1, 19, 0, 0, 0, time.UTC)
	base := func() gossip.Meta {
		return gossip.Meta{Healthy: true, Reason: "", LeavingSince: at, Started: at,
			Groups: map[string]gossip.GroupMeta{"egress": {Priority: 200, Owns: true}}}
	}
	// Every field must be compared: a field sameMeta ignores would never reach the peers.
	if n := reflect.TypeFor[gossip.Meta]().NumField(); n != 6 {
		t.Fatalf("gossip.Meta has %d fields; compare the new ones in sameMeta and list them here", n)
	}
	tests := []struct {
		name   string
		change func(m *gossip.Meta)
		same   bool
	}{
		{"Unchanged", func(m *gossip.Meta) {}, true},
		{"SameInstantOtherZone", func(m *gossip.Meta) { m.Started = at.In(time.FixedZone("x", 3600)) }, true},
		{"Healthy", func(m *gossip.Meta) { m.Healthy = false }, false},
		{"Reason", func(m *gossip.Meta) { m.Reason = "datapath" }, false},
		{"Leaving", func(m *gossip.Meta) { m.Leaving = true }, false},
		{"LeavingSince", func(m *gossip.Meta) { m.LeavingSince = at.Add(time.Millisecond) }, false},
		{"Started", func(m *gossip.Meta) { m.Started = at.Add(time.Millisecond) }, false},
		{"GroupOwns", func(m *gossip.Meta) { m.Groups["egress"] = gossip.GroupMeta{Priority: 200} }, false},
		{"GroupYielded", func(m *gossip.Meta) { m.Groups["egress"] = gossip.GroupMeta{Priority: 200, Owns: true, Yielded: true} }, false},
		{"GroupAdded", func(m *gossip.Meta) { m.Groups["other"] = gossip.GroupMeta{Priority: 1} }, false},
		{"GroupsNil", func(m *gossip.Meta) { m.Groups = nil }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			tt.change(&m)
			if got := sameMeta(base(), m); got != tt.same {
				t.Errorf("sameMeta = %v, want %v", got, tt.same)
			}
		})
	}
}
