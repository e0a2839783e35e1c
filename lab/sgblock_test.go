package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/lab"
)

// A security group (or network ACL, or host firewall) that opens the gossip port between the
// NATs for TCP only, or for UDP only: no false failover, members and the log say what is
// blocked, and a real kill still fails over.

// gossipBlock is what one blocked protocol looks like from the agents.
type gossipBlock struct {
	proto string
	// note is what members shows next to the peer; warn what the log says, once.
	note, warn string
	// repeat is memberlist's own line for each probe or sync the block fails, which goes to
	// the debug log once the agent has said what is wrong.
	repeat string
}

var (
	udpBlock = gossipBlock{proto: "udp",
		note:   "UDP to the gossip port is blocked (TCP works): open UDP 7946 between the NAT instances",
		warn:   "UDP to the peer's gossip port is blocked, TCP gets through: open UDP 7946 between the NAT instances",
		repeat: "over TCP but UDP probes failed"}
	tcpBlock = gossipBlock{proto: "tcp",
		note:   "TCP to the gossip port is blocked (UDP works): open TCP 7946 between the NAT instances",
		warn:   "TCP to the peer's gossip port is blocked, UDP gets through: open TCP 7946 between the NAT instances",
		repeat: "Push/Pull with"}
)

// peerRow returns the row of host's members at the other NAT's gossip address, if any.
func peerRow(ms []agent.MemberView, host string) (agent.MemberView, bool) {
	addr := natIP(lab.Peer(host)) + ":7946"
	for _, m := range ms {
		if !m.Self && m.Address == addr {
			return m, true
		}
	}
	return agent.MemberView{}, false
}

// waitPeerNote waits until host's members show note on the other NAT's row, and returns it.
func waitPeerNote(ctx context.Context, t *testing.T, p *pair, host, note string, timeout time.Duration) agent.MemberView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms, err := p.Members(ctx, host)
		if err == nil {
			if m, ok := peerRow(ms, host); ok && strings.Contains(m.Reason, note) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's members never showed %q next to its peer within %s: %+v (%v)", host, note, timeout, ms, err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// holdBlocked blocks b.proto between the NATs of a ready pair owned by nat1, waits until both
// agents say so in members and in the log, keeps it blocked for several detection times
// and reconciles, and checks that nothing moved and nothing misleading was said.
func holdBlocked(ctx context.Context, t *testing.T, p *pair, b gossipBlock) time.Time {
	t.Helper()
	blocked := time.Now()
	if err := p.BlockGossip(ctx, b.proto); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{lab.Nat1, lab.Nat2} {
		m := waitPeerNote(ctx, t, p, h, b.note, time.Minute)
		ln := waitLogged(ctx, t, p.Lab, h, b.warn, blocked, 5*time.Second)
		t.Logf("%s %.1fs after the block: %s; members: %s %s %q", h, ln.At.Sub(blocked).Seconds(), ln.Level, m.State, m.Address, m.Reason)
		if ln.Level != "warn" {
			t.Errorf("%s logged the block at %s, want warn", h, ln.Level)
		}
		if m.State != "alive" || !m.Healthy {
			t.Errorf("%s shows its peer %s, healthy %v; want alive and healthy", h, m.State, m.Healthy)
		}
	}
	// memberlist alone detects a death in about a second and the agent re-reads EC2 every
	// reconcile interval: this is many of both.
	p.holdOwner(ctx, t, 3*reconcileInterval, "with "+strings.ToUpper(b.proto)+" to the gossip port blocked")
	p.requireOwners(t, lab.Nat1)
	for _, h := range []string{lab.Nat1, lab.Nat2} {
		if tks := p.takeoversBy(h, blocked); len(tks) > 0 {
			t.Errorf("%s claimed the group with %s blocked: %+v", h, b.proto, tks)
		}
		n, err := p.GossipBlocked(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("the block on %s dropped no packet: it proved nothing", h)
		}
		ms, err := p.Members(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := peerRow(ms, h); !ok || m.State != "alive" || !strings.Contains(m.Reason, b.note) {
			t.Errorf("%s's members after %s: %+v, want its peer alive with %q", h, 3*reconcileInterval, ms, b.note)
		}
		if lns := logged(t, p.Lab, h, b.warn, blocked); len(lns) != 1 {
			t.Errorf("%s said %d times that %s is blocked, want once", h, len(lns), b.proto)
		}
		// Said once, memberlist's repeats go to debug; and no other cause is blamed.
		said := logged(t, p.Lab, h, b.warn, blocked)[0].At
		if lns := logged(t, p.Lab, h, b.repeat, said.Add(time.Millisecond)); len(lns) > 0 {
			t.Errorf("%s still logs memberlist's %q after saying what is blocked (%d lines)", h, b.repeat, len(lns))
		}
		if lns := logged(t, p.Lab, h, "different gossip key", blocked); len(lns) > 0 {
			t.Errorf("%s blamed another gossip key with %s blocked: %s", h, b.proto, lns[0].Msg)
		}
		// With UDP blocked, a TCP fallback ping that misses its probe interval on a busy
		// machine makes memberlist declare the peer dead until the next rejoin: allowed, as
		// long as nothing moves.
		t.Logf("%s: the block dropped %d packets from its peer; %d \"peer gone\"", h, n, len(logged(t, p.Lab, h, "peer gone", blocked)))
	}
	return blocked
}

// killOwner hard-kills nat1 and checks that nat2 takes over within bound.
func killOwner(ctx context.Context, t *testing.T, p *pair, tr *lab.Traffic, bound time.Duration) {
	t.Helper()
	f, err := p.HardKill(ctx, tr, lab.Nat1, lab.Natganker, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if f.Takeover == nil {
		t.Fatal("nat2 logged no takeover")
	}
	t.Logf("hard kill of nat1: nat2 decided %.3fs after, EC2 converged %.3fs after, client outage %.3fs; reason: %s",
		f.Detection().Seconds(), f.Converged().Seconds(), f.Outage.Duration().Seconds(), f.Takeover.Reason)
	if f.Detection() > bound {
		t.Errorf("nat2 took %.3fs to decide, want under %s", f.Detection().Seconds(), bound)
	}
	p.requireOwners(t, lab.Nat1, lab.Nat2)
}

// TestGossipBlock_UDP: the gossip port is open between the NATs for TCP only. memberlist's
// TCP fallback ping answers each probe, so nothing moves; a kill is detected as fast as
// usual, since the TCP fallback fails too then.
func TestGossipBlock_UDP(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	p := startPair(ctx, t, agentBin, 0)
	tr, err := p.StartTraffic(ctx)
	if err != nil {
		t.Fatalf("client traffic through nat1: %v", err)
	}
	holdBlocked(ctx, t, p, udpBlock)
	// A burst that finds the port open and no UDP answer once held a takeover off for up
	// to 10 s, taking the owner for a node with another key.
	killOwner(ctx, t, p, tr, 5*time.Second)
}

// TestGossipBlock_TCP: the gossip port is open between the NATs for UDP only. Probes and
// gossip work and push/pull fails, so nothing moves. A node that restarts cannot join again
// (its peer ignores its fresh incarnation and push/pull is the only way to learn better):
// each side says it cannot join, and the restarted standby, which sees the owner answer its
// direct probes, leaves it alone. A kill of the owner is still a takeover.
func TestGossipBlock_TCP(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := startPair(ctx, t, agentBin, 0)
	tr, err := p.StartTraffic(ctx)
	if err != nil {
		t.Fatalf("client traffic through nat1: %v", err)
	}
	holdBlocked(ctx, t, p, tcpBlock)

	restarted := time.Now()
	p.StopNode(lab.Nat2)
	if err := p.StartNode(ctx, lab.Nat2, lab.Natganker); err != nil {
		t.Fatalf("restart nat2's agent: %v", err)
	}
	waitLogged(ctx, t, p.Lab, lab.Nat2, "running", restarted, 10*time.Second)
	// nat2 never learns of nat1: it has no row for it but the one saying it cannot join.
	m := waitPeerNote(ctx, t, p, lab.Nat2, "cannot join: "+tcpBlock.note, time.Minute)
	ln := waitLogged(ctx, t, p.Lab, lab.Nat2, "cannot join the peer: TCP to its gossip port is blocked, UDP gets through: open TCP 7946", restarted, 5*time.Second)
	t.Logf("nat2 %.1fs after its restart: %s; members: %s %s %s %q", ln.At.Sub(restarted).Seconds(), ln.Msg, m.Name, m.State, m.Address, m.Reason)
	if m.State != "cannot-join" || ln.Level != "warn" {
		t.Errorf("restarted nat2 shows nat1 as %q and logged it at %s, want cannot-join, at warn", m.State, ln.Level)
	}
	// nat1 may take nat2 back as a member over UDP (nat2's pings carry its alive message)
	// before or after its own attempts to join nat2 fail: either way its row says TCP is
	// blocked.
	m = waitPeerNote(ctx, t, p, lab.Nat1, tcpBlock.note, time.Minute)
	t.Logf("nat1 after nat2's restart: members: %s %s %s %q; said it cannot join nat2 %d times", m.Name, m.State, m.Address, m.Reason,
		len(logged(t, p.Lab, lab.Nat1, "cannot join the peer", restarted)))
	p.holdOwner(ctx, t, 3*reconcileInterval, "after nat2 restarted and cannot join nat1")
	if tks := p.takeoversBy(lab.Nat2, restarted); len(tks) > 0 {
		t.Fatalf("nat2 claimed the group from a live nat1 it cannot join: %+v", tks)
	}
	p.requireOwners(t, lab.Nat1)

	// nat1 is no member for nat2 now: nat2 re-probes it only every so often.
	killOwner(ctx, t, p, tr, 30*time.Second)
}
