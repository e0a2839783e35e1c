package gossip

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// Probe is what a confirmation burst found out about a peer.
type Probe struct {
	// Answered: the peer acknowledged a ping sealed with this node's gossip key.
	Answered bool
	// Reachable: the peer's gossip port accepted a TCP connection. That needs no key, so a
	// peer that is reachable but never answers is alive and most likely uses another key,
	// unless UDPBlocked.
	Reachable bool
	// UDPBlocked: the burst's pings went unanswered, but the peer answers memberlist's
	// probes over TCP, which are sealed with the gossip key too: it holds this node's key,
	// and UDP between the two is blocked.
	UDPBlocked bool
	// Took is how long the burst ran.
	Took time.Duration
}

// Alive reports whether anything showed the peer is up.
func (p Probe) Alive() bool { return p.Answered || p.Reachable }

// KeyMismatch reports whether the peer is up but does not understand this node's gossip.
func (p Probe) KeyMismatch() bool { return p.Reachable && !p.Answered && !p.UDPBlocked }

// Confirm probes a peer directly, independently of memberlist's own failure detector: it
// sends ConfirmProbes pings spread over ConfirmTimeout and, at the same time, opens a TCP
// connection to the peer's gossip port. A peer memberlist declared dead because a few packets
// were lost answers here; a forged or replayed "dead" message cannot make a live peer stop
// answering; and a peer whose gossip this node cannot decrypt (another key) still accepts the
// connection, so its silence is not taken for death. Confirm returns as soon as the pings are
// answered, or when the burst is over.
func (g *Gossip) Confirm(ctx context.Context, name, addr string) (Probe, error) {
	start := time.Now()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return Probe{}, fmt.Errorf("confirm %s: resolve %s: %w", name, addr, err)
	}
	n := g.cfg.ConfirmProbes
	spacing := time.Duration(0)
	if n > 1 && g.cfg.ConfirmTimeout > g.cfg.ProbeTimeout {
		spacing = (g.cfg.ConfirmTimeout - g.cfg.ProbeTimeout) / time.Duration(n-1)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answered := make(chan struct{}, n)
	// One TCP connection attempt next to each ping: on a lossy link a single SYN (or its
	// answer) is lost too often to be the only evidence a peer with another key is up.
	reachable := make(chan bool, n)
	dialBy := start.Add(max(g.cfg.ConfirmTimeout, g.cfg.ProbeTimeout))
	var wg sync.WaitGroup
	var p Probe
	finish := func() (Probe, error) {
		cancel()
		wg.Wait()
		close(reachable)
		for ok := range reachable {
			p.Reachable = p.Reachable || ok
		}
		select {
		case <-answered:
			p.Answered = true
		default:
		}
		if p.Answered {
			g.path.udpAck(addr, name)
		} else if p.Reachable {
			p.UDPBlocked = g.path.udpBlocked(addr)
		}
		p.Took = time.Since(start)
		return p, nil
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-answered:
				p.Answered = true
				return finish()
			case <-ctx.Done():
				cancel()
				wg.Wait()
				return Probe{}, ctx.Err()
			case <-time.After(spacing):
			}
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := g.ml.Ping(name, ua); err == nil {
				answered <- struct{}{}
			}
		}()
		by := dialBy
		if least := time.Now().Add(g.cfg.ProbeTimeout); least.After(by) {
			by = least
		}
		go func() {
			defer wg.Done()
			reachable <- g.dialGossip(ctx, ua.String(), by)
		}()
	}
	// Wait for the last ping's ack timeout; the dial may end the wait early only when it
	// failed for good (refused), never because it succeeded: an answer still counts more.
	wg.Wait()
	return finish()
}

// dialGossip reports whether addr accepts a TCP connection by deadline. The connection is
// closed at once, without a word: memberlist takes an empty stream quietly.
func (g *Gossip) dialGossip(ctx context.Context, addr string, deadline time.Time) bool {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
