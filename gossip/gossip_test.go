package gossip

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's packet handler and ack timers finish shortly after Shutdown.
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).pushPullTrigger"),
	)
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testConfig(t *testing.T, name string, port int, peers ...string) Config {
	t.Helper()
	return Config{
		Name: name, BindAddr: "127.0.0.1", BindPort: port, Peers: peers, EncryptKey: testKey,
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 3,
		GossipInterval: 100 * time.Millisecond, RejoinInterval: 300 * time.Millisecond,
		ConfirmProbes: 5, ConfirmTimeout: 300 * time.Millisecond,
		Meta: Meta{Healthy: true, Groups: map[string]GroupMeta{"egress": {Priority: 100}}},
	}
}

func start(t *testing.T, cfg Config) *Gossip {
	t.Helper()
	g, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// waitEvent reads events until one matches or the deadline passes.
func waitEvent(t *testing.T, g *Gossip, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-g.Events():
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("%s: no matching event within 10s", what)
		}
	}
}

func TestGossip_Membership(t *testing.T) {
	pa, pb := freePort(t), freePort(t)
	addrA := fmt.Sprintf("127.0.0.1:%d", pa)
	addrB := fmt.Sprintf("127.0.0.1:%d", pb)

	t.Run("JoinAndMeta", func(t *testing.T) {
		a := start(t, testConfig(t, "i-a", pa, addrB))
		cb := testConfig(t, "i-b", pb, addrA)
		cb.Meta.Groups["egress"] = GroupMeta{Priority: 200, Owns: true}
		b := start(t, cb)
		e := waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })
		if got := e.Member.Meta.Groups["egress"]; got.Priority != 200 || !got.Owns {
			t.Fatalf("b's metadata as seen by a = %+v", got)
		}
		if e.Member.Addr != addrB {
			t.Fatalf("b's address = %s, want %s", e.Member.Addr, addrB)
		}
		// A metadata change reaches the peer as an update.
		if err := b.SetMeta(Meta{Healthy: false, Reason: "masquerade rule missing", Groups: cb.Meta.Groups}); err != nil {
			t.Fatal(err)
		}
		e = waitEvent(t, a, "a sees b unhealthy", func(e Event) bool {
			return e.Member.Name == "i-b" && e.Kind == EventUpdate && !e.Member.Meta.Healthy
		})
		if e.Member.Meta.Reason != "masquerade rule missing" {
			t.Fatalf("reason = %q", e.Member.Meta.Reason)
		}
		p, err := a.Confirm(context.Background(), "i-b", addrB)
		if err != nil || !p.Answered || !p.Alive() {
			t.Fatalf("confirm live peer = %+v, %v; want answered", p, err)
		}

		// Killed without leaving: a sees it dead, and confirmation agrees.
		b.Close()
		e = waitEvent(t, a, "a sees b dead", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventLeave })
		if e.Member.State != StateDead {
			t.Fatalf("state after kill = %s, want dead", e.Member.State)
		}
		p, err = a.Confirm(context.Background(), "i-b", addrB)
		if err != nil || p.Alive() {
			t.Fatalf("confirm killed peer = %+v, %v; want not alive", p, err)
		}
		var found bool
		for _, m := range a.Members() {
			if m.Name == "i-b" {
				found = true
				if m.State != StateDead {
					t.Fatalf("Members() has b as %s", m.State)
				}
			}
		}
		if !found {
			t.Fatal("Members() forgot the dead peer")
		}
		a.Close()
	})

	t.Run("GracefulLeave", func(t *testing.T) {
		pa, pb := freePort(t), freePort(t)
		addrA := fmt.Sprintf("127.0.0.1:%d", pa)
		a := start(t, testConfig(t, "i-a", pa))
		cb := testConfig(t, "i-b", pb, addrA)
		b := start(t, cb)
		waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })
		// b must know a too: memberlist only waits for a metadata broadcast to go out when
		// it knows a live peer to send it to.
		waitEvent(t, b, "b sees a", func(e Event) bool { return e.Member.Name == "i-a" && e.Kind == EventJoin })
		leaving := cb.Meta
		leaving.Leaving = true
		if err := b.PublishMeta(leaving, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := b.Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		e := waitEvent(t, a, "a sees b leave", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventLeave })
		if e.Member.State != StateLeft {
			t.Fatalf("state after graceful leave = %s, want left", e.Member.State)
		}
		// A graceful leave skips suspicion: far quicker than the failure detector.
		if d := time.Since(start); d > time.Second {
			t.Fatalf("leave took %v to be seen", d)
		}
	})

	t.Run("RejoinLatePeer", func(t *testing.T) {
		pa, pb := freePort(t), freePort(t)
		addrB := fmt.Sprintf("127.0.0.1:%d", pb)
		// a knows b's address but b starts later and knows nobody: only a's rejoin loop
		// can bring them together.
		a := start(t, testConfig(t, "i-a", pa, addrB))
		start(t, testConfig(t, "i-b", pb))
		waitEvent(t, a, "a joins b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })
	})

	t.Run("WrongKeyCannotJoin", func(t *testing.T) {
		pa, pb := freePort(t), freePort(t)
		addrA := fmt.Sprintf("127.0.0.1:%d", pa)
		a := start(t, testConfig(t, "i-a", pa))
		cb := testConfig(t, "i-b", pb, addrA)
		cb.EncryptKey = []byte("fedcba9876543210fedcba9876543210")
		cb.RejoinInterval = time.Hour
		b := start(t, cb)
		if n, err := b.ml.Join([]string{addrA}); err == nil {
			t.Fatalf("join with the wrong key succeeded (%d nodes)", n)
		}
		for _, m := range a.Members() {
			if m.Name == "i-b" {
				t.Fatal("a accepted a node with the wrong key")
			}
		}
		// Each side names the other as unreadable, rather than taking its silence for death.
		waitUnreadable(t, a, "127.0.0.1")
		waitUnreadable(t, b, "127.0.0.1")
		// b's encrypted pings go unanswered, but a's gossip port accepts: alive, other key.
		p, err := b.Confirm(context.Background(), "i-a", addrA)
		if err != nil || p.Answered || !p.Reachable || !p.KeyMismatch() || !p.Alive() {
			t.Fatalf("confirm across keys = %+v, %v; want reachable, not answered", p, err)
		}
	})
}

func waitUnreadable(t *testing.T, g *Gossip, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, u := range g.Unreadable() {
			if u.Addr == addr {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listed %s as unreadable: %+v", g.cfg.Name, addr, g.Unreadable())
		}
	}
}

// TestGossip_ConfirmUnknownAddress checks that nothing answering means not alive, and that a
// bad address is an error rather than a verdict.
func TestGossip_ConfirmUnknownAddress(t *testing.T) {
	pa := freePort(t)
	a := start(t, testConfig(t, "i-a", pa))
	closed := freePort(t)
	p, err := a.Confirm(context.Background(), "i-x", fmt.Sprintf("127.0.0.1:%d", closed))
	if err != nil || p.Alive() {
		t.Fatalf("confirm of nothing = %+v, %v", p, err)
	}
	if _, err := a.Confirm(context.Background(), "i-x", "not an address"); err == nil || !strings.Contains(err.Error(), "resolve") {
		t.Fatalf("bad address error = %v", err)
	}
}

// TestNew_KeyLength refuses a key AES cannot use before anything is bound, naming its length.
func TestNew_KeyLength(t *testing.T) {
	for _, n := range []int{1, 15, 17, 31, 33, 64} {
		cfg := testConfig(t, "a", freePort(t))
		cfg.EncryptKey = make([]byte, n)
		_, err := New(cfg, hclog.NewNullLogger())
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("key is %d bytes", n)) {
			t.Errorf("%d-byte key: error %v, want one naming the length", n, err)
		}
	}
	for _, n := range []int{0, 16, 24, 32} {
		cfg := testConfig(t, "a", freePort(t))
		cfg.EncryptKey = make([]byte, n)
		if _, err := New(cfg, hclog.NewNullLogger()); err != nil {
			t.Errorf("%d-byte key refused: %v", n, err)
		}
	}
}

// SetMeta's background push and PublishMeta both call memberlist's UpdateNode, which is not
// safe to run twice at once; under the race detector this fails without the serialisation,
// and the peer must end up with the last metadata published.
func TestGossip_SetMetaDuringPublish(t *testing.T) {
	pa, pb := freePort(t), freePort(t)
	a := start(t, testConfig(t, "i-a", pa, fmt.Sprintf("127.0.0.1:%d", pb)))
	b := start(t, testConfig(t, "i-b", pb, fmt.Sprintf("127.0.0.1:%d", pa)))
	waitEvent(t, a, "a sees b", func(e Event) bool { return e.Member.Name == "i-b" && e.Kind == EventJoin })

	groups := map[string]GroupMeta{"egress": {Priority: 100}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			if err := b.SetMeta(Meta{Healthy: true, Reason: fmt.Sprintf("set %d", i), Groups: groups}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 2000; i++ {
		// A timeout error is allowed here: only the race matters.
		_ = b.PublishMeta(Meta{Healthy: true, Reason: fmt.Sprintf("publish %d", i), Groups: groups}, time.Microsecond)
	}
	wg.Wait()
	if err := b.PublishMeta(Meta{Healthy: false, Reason: "last", Groups: groups}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, a, "a sees b's last metadata", func(e Event) bool {
		return e.Member.Name == "i-b" && e.Member.Meta.Reason == "last"
	})
}
