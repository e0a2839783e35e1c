package gossip

import (
	"fmt"
	"time"
)

// Heartbeat sends one ping to the member called name at addr and waits up to the probe
// timeout for its ack. An ack counts as contact (LastContact), as an ack to memberlist's own
// probes does. The agent's heartbeat to a group's owner is made of these: they come far more
// often than memberlist's probes, which pick a random member each probe interval.
func (g *Gossip) Heartbeat(name, addr string) error {
	ua, err := udpAddr(addr)
	if err != nil {
		return fmt.Errorf("heartbeat %s: resolve %s: %w", name, addr, err)
	}
	if _, err := g.ml.Ping(name, ua); err != nil {
		return err
	}
	g.mu.Lock()
	if _, ok := g.members[name]; ok {
		g.contact[name] = time.Now()
	}
	g.mu.Unlock()
	g.path.udpAck(addr, name)
	return nil
}
