package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/natganker/natganker/lab"
)

// TestLab_ThreeNATsTwoZones is the README's deployment in the lab: two zones, one group per
// zone, nat1 and nat2 each primary for its own zone's group, nat3 the standby of both, every
// NAT with a secondary private address; EC2 associates as EC2 does (an Elastic IP on a private
// address that has one displaces it). Each zone's client must leave with its own group's
// Elastic IP throughout. A kill moves the dead NAT's group alone, and the group fails back to
// its zone's NAT when that comes back; with two NATs dead the last one holds both groups, each
// Elastic IP on its own address, and both zones still leave with their own.
func TestLab_ThreeNATsTwoZones(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	l := upAgents(ctx, t, lab.Options{AgentBin: agentBin, Zones: true, FailbackDelay: 3 * time.Second})
	eip := map[string]string{lab.GroupA: lab.ElasticIP, lab.GroupB: lab.ElasticIPB}
	client := map[string]string{lab.GroupA: lab.ClientA, lab.GroupB: lab.ClientB}
	// egress waits until each zone's client leaves with its group's Elastic IP.
	egress := func(what string) {
		t.Helper()
		for _, g := range []string{lab.GroupA, lab.GroupB} {
			var got string
			var err error
			for deadline := time.Now().Add(30 * time.Second); ; {
				if got, err = lab.Whoami(client[g], 200*time.Millisecond); err == nil && got == eip[g] {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s's traffic leaves as %q (%v), want %s's Elastic IP %s", what, client[g], got, err, g, eip[g])
				}
			}
		}
	}
	// settle waits for a layout and checks both zones' egress on it.
	settle := func(what string, want lab.ZoneLayout) {
		t.Helper()
		if err := l.WaitZones(ctx, want, 45*time.Second); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		egress(what)
	}
	// stays fails the test if group g is anywhere but on host while f runs.
	stays := func(g, host string, f func()) {
		t.Helper()
		done := make(chan struct{})
		moved := make(chan string, 1)
		go func() {
			for {
				if h := l.Zones()[g]; h != host {
					moved <- h
					return
				}
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		f()
		close(done)
		select {
		case h := <-moved:
			t.Fatalf("%s left %s for %q meanwhile", g, host, h)
		default:
		}
	}
	settle("start", lab.ZoneLayout{lab.GroupA: lab.Nat1, lab.GroupB: lab.Nat2})

	// Zone a's NAT dies: its group goes to the standby; zone b's never moves.
	stays(lab.GroupB, lab.Nat2, func() {
		if _, err := l.KillHost(ctx, lab.Nat1); err != nil {
			t.Fatal(err)
		}
		settle("nat1 dead", lab.ZoneLayout{lab.GroupA: lab.Nat3, lab.GroupB: lab.Nat2})
		if err := l.ReviveHost(ctx, lab.Nat1); err != nil {
			t.Fatal(err)
		}
		settle("nat1 back", lab.ZoneLayout{lab.GroupA: lab.Nat1, lab.GroupB: lab.Nat2})
	})
	// Zone b's NAT dies: the same the other way; nat3 holds az-b on its secondary address.
	stays(lab.GroupA, lab.Nat1, func() {
		if _, err := l.KillHost(ctx, lab.Nat2); err != nil {
			t.Fatal(err)
		}
		settle("nat2 dead", lab.ZoneLayout{lab.GroupA: lab.Nat1, lab.GroupB: lab.Nat3})
		// Then the standby too: nat1 holds both groups, each Elastic IP on its own address.
		if _, err := l.KillHost(ctx, lab.Nat3); err != nil {
			t.Fatal(err)
		}
		settle("nat2 and nat3 dead", lab.ZoneLayout{lab.GroupA: lab.Nat1, lab.GroupB: lab.Nat1})
		for _, h := range []string{lab.Nat2, lab.Nat3} {
			if err := l.ReviveHost(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		settle("nat2 and nat3 back", lab.ZoneLayout{lab.GroupA: lab.Nat1, lab.GroupB: lab.Nat2})
	})
	if n := l.ProxyDisplaced(); n != 0 {
		t.Errorf("%d Elastic IPs were displaced by another one associated with their address", n)
	}
}
