package conntrack

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
)

// The watcher reports masqueraded flows as the kernel creates and destroys them, and only
// those; a snapshot holds the same flows.
func TestWatch_FollowsMasqueradedFlows(t *testing.T) {
	netns := newNamespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	records := make(chan Record, 16)
	done := make(chan error, 1)
	// Watch is listening once a first flow created after it started is reported.
	go func() { done <- Watch(ctx, netns, func(r Record) { records <- r }) }()
	in, err := NewInstaller(netns)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	// Records of the flows that showed the watcher was listening are skipped; one of the
	// flow that is never masqueraded fails the test.
	probes := map[netip.AddrPort]bool{}
	unmapped := netip.MustParseAddrPort("198.18.1.100:41000")
	next := func(what string) Record {
		t.Helper()
		for {
			select {
			case r := <-records:
				if r.Flow.Src == unmapped {
					t.Fatalf("a flow that is not masqueraded was reported: %+v", r)
				}
				if !probes[r.Flow.Src] {
					return r
				}
			case err := <-done:
				t.Fatalf("watch ended waiting for %s: %v", what, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("no record for %s", what)
			}
		}
	}
	probe := Flow{Proto: TCP, Dst: netip.MustParseAddrPort("198.19.0.1:443"), Status: StatusSeenReply, TCPState: TCPEstablished, Timeout: 600}
	for i := 0; ; i++ {
		probe.Src = netip.AddrPortFrom(netip.MustParseAddr("198.18.1.100"), uint16(30000+i))
		probe.NAT = netip.AddrPortFrom(netip.MustParseAddr("198.18.1.11"), probe.Src.Port())
		probes[probe.Src] = true
		if err := in.Install(probe); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-records:
			if r.Flow.Src == probe.Src {
				goto listening
			}
		case <-time.After(100 * time.Millisecond):
		}
		if i == 100 {
			t.Fatal("the watcher never reported a flow")
		}
	}
listening:
	mapped := Flow{Proto: TCP, Src: netip.MustParseAddrPort("198.18.1.100:40000"), Dst: netip.MustParseAddrPort("198.19.0.1:443"),
		NAT: netip.MustParseAddrPort("198.18.1.11:40000"), Status: StatusSeenReply | StatusAssured, TCPState: TCPEstablished, Timeout: 600}
	if err := in.Install(mapped); err != nil {
		t.Fatal(err)
	}
	if r := next("the TCP flow"); r.Op != OpPut || !sameFlow(r.Flow, mapped) {
		t.Fatalf("record = %+v, want a put of %+v", r, mapped)
	}

	// A flow that is not masqueraded is not reported; the next masqueraded one is.
	c, err := ct.Dial(&netlink.Config{NetNS: netns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	plain := ct.NewFlow(UDP, 0, unmapped.Addr(), netip.MustParseAddr("198.19.0.1"), unmapped.Port(), 53, 60, 0)
	if err := c.Create(plain); err != nil {
		t.Fatal(err)
	}
	udp := Flow{Proto: UDP, Src: netip.MustParseAddrPort("198.18.1.100:41001"), Dst: netip.MustParseAddrPort("198.19.0.1:53"),
		NAT: netip.MustParseAddrPort("198.18.1.11:61001"), Status: StatusSeenReply, Timeout: 120}
	if err := in.Install(udp); err != nil {
		t.Fatal(err)
	}
	if r := next("the UDP flow"); r.Op != OpPut || !sameFlow(r.Flow, udp) {
		t.Fatalf("record = %+v, want a put of %+v", r, udp)
	}

	snap, err := Snapshot(netns)
	if err != nil {
		t.Fatal(err)
	}
	var found []Flow
	for _, f := range snap {
		if f.Src == unmapped {
			t.Fatalf("the snapshot holds a flow that is not masqueraded: %+v", f)
		}
		if sameFlow(f, mapped) || sameFlow(f, udp) {
			found = append(found, f)
		}
	}
	if len(found) != 2 {
		t.Fatalf("snapshot holds %d of the 2 masqueraded flows: %+v", len(found), snap)
	}

	deleteFlow(t, netns, mapped)
	if r := next("the deletion"); r.Op != OpDelete || r.Flow.Src != mapped.Src || r.Flow.Dst != mapped.Dst {
		t.Fatalf("record = %+v, want the deletion of %s → %s", r, mapped.Src, mapped.Dst)
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("watch ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end with its context")
	}
}

func deleteFlow(t *testing.T, netns int, f Flow) {
	t.Helper()
	if err := deleteFlowErr(netns, f); err != nil {
		t.Fatal(err)
	}
}

// deleteFlowErr removes f from the namespace's conntrack table.
func deleteFlowErr(netns int, f Flow) error {
	c, err := ct.Dial(&netlink.Config{NetNS: netns})
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Delete(ct.NewFlow(f.Proto, 0, f.Src.Addr(), f.Dst.Addr(), f.Src.Port(), f.Dst.Port(), 0, 0))
}

// sameFlow compares all but the timeout, which the kernel counts down.
func sameFlow(a, b Flow) bool {
	a.Timeout, b.Timeout = 0, 0
	return a == b
}
