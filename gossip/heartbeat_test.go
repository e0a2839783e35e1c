package gossip

import (
	"fmt"
	"testing"
)

// TestGossip_Heartbeat: an answered heartbeat is contact; a stopped peer's is an error.
func TestGossip_Heartbeat(t *testing.T) {
	pa, pb := freePort(t), freePort(t)
	addrB := fmt.Sprintf("127.0.0.1:%d", pb)
	a := start(t, testConfig(t, "i-a", pa, addrB))
	b := start(t, testConfig(t, "i-b", pb, fmt.Sprintf("127.0.0.1:%d", pa)))
	waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })

	before := a.LastContact("i-b")
	if err := a.Heartbeat("i-b", addrB); err != nil {
		t.Fatalf("heartbeat to a live peer: %v", err)
	}
	if after := a.LastContact("i-b"); !after.After(before) {
		t.Fatalf("an answered heartbeat did not count as contact: %v, then %v", before, after)
	}
	if err := a.Heartbeat("i-b", "not an address"); err == nil {
		t.Fatal("heartbeat to a bad address: no error")
	}
	b.Close()
	if err := a.Heartbeat("i-b", addrB); err == nil {
		t.Fatal("heartbeat to a stopped peer: no error")
	}
}
