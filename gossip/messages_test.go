package gossip

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Messages reach the named member, by UDP and over TCP, sealed with the cluster key; a
// name that is not a member is an error, not a silent loss.
func TestGossip_Messages(t *testing.T) {
	pa, pb := freePort(t), freePort(t)
	a := start(t, testConfig(t, "i-a", pa, fmt.Sprintf("127.0.0.1:%d", pb)))
	b := start(t, testConfig(t, "i-b", pb, fmt.Sprintf("127.0.0.1:%d", pa)))
	got := make(chan string, 64)
	b.OnMessage(func(msg []byte) { got <- string(msg) })
	waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })
	if !a.Sealed() {
		t.Fatal("a cluster with a key says its messages are not sealed")
	}
	for _, reliable := range []bool{false, true} {
		want := fmt.Sprintf("flows, reliable=%v", reliable)
		// A UDP packet may be lost: send again until one arrives.
		deadline := time.Now().Add(10 * time.Second)
		for received := false; !received; {
			if err := a.Send("i-b", []byte(want), reliable); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				// A copy of the UDP message may come late, during the TCP round.
				if m != want && m != "flows, reliable=false" {
					t.Fatalf("b got %q, want %q", m, want)
				}
				received = m == want
			case <-time.After(200 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatalf("b never got %q", want)
				}
			}
		}
	}
	if err := a.Send("i-nobody", []byte("x"), false); !errors.Is(err, ErrNotMember) {
		t.Fatalf("send to a stranger: err = %v, want ErrNotMember", err)
	}
}
