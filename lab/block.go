package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// GossipPort is the port the lab's agents gossip on, over UDP and TCP (see agentConfig).
const GossipPort = 7946

// blockTable is the nftables table BlockGossip loads in each NAT.
const blockTable = "labgossipblock"

// BlockGossip makes each NAT drop the packets of proto ("udp" or "tcp") that come from the
// other NAT to its gossip port, and nothing else: the way a security group or a network ACL
// that opens the gossip port between the NAT instances for one protocol only looks from
// the instances. The drop is on input, before connection tracking, so that the sender sees
// silence (a timeout), never an error.
//
// The drop is stateless, as a network ACL or a host firewall is. A security group is
// stateful: it lets in what answers a flow the instance opened, and memberlist sends its
// UDP from the gossip port to the gossip port, so between two nodes that both send, an
// unopened UDP port may well pass in AWS. A TCP connection to the gossip port opens from an
// ephemeral port, so a missing TCP rule does block it there.
//
// Calling BlockGossip again replaces the rule; UnblockGossip removes it.
func (l *Lab) BlockGossip(ctx context.Context, proto string) error {
	if proto != "udp" && proto != "tcp" {
		return fmt.Errorf("block gossip: protocol %q is neither udp nor tcp", proto)
	}
	for _, h := range []string{Nat1, Nat2} {
		script := fmt.Sprintf(`table inet %[1]s {}
delete table inet %[1]s
table inet %[1]s {
  chain in {
    type filter hook input priority -300; policy accept;
    ip saddr %[2]s %[3]s dport %[4]d counter drop
  }
}
`, blockTable, natIP(Peer(h)), proto, GossipPort)
		if err := nftStdin(ctx, NS(h), script); err != nil {
			return fmt.Errorf("block %s/%d on %s: %w", proto, GossipPort, h, err)
		}
	}
	l.tl.Add(time.Now(), "lab", "BLOCK %s to the gossip port (%d) between nat1 and nat2", strings.ToUpper(proto), GossipPort)
	return nil
}

// UnblockGossip removes what BlockGossip put in place; it is not an error when nothing is.
func (l *Lab) UnblockGossip(ctx context.Context) error {
	for _, h := range []string{Nat1, Nat2} {
		script := fmt.Sprintf("table inet %[1]s {}\ndelete table inet %[1]s\n", blockTable)
		if err := nftStdin(ctx, NS(h), script); err != nil {
			return fmt.Errorf("unblock gossip on %s: %w", h, err)
		}
	}
	l.tl.Add(time.Now(), "lab", "UNBLOCK the gossip port between nat1 and nat2")
	return nil
}

// GossipBlocked returns how many packets BlockGossip's rule has dropped on host so far:
// proof that the block was in the way of the gossip, not only loaded.
func (l *Lab) GossipBlocked(ctx context.Context, host string) (int, error) {
	out, err := nsRun(ctx, NS(host), "nft", "list", "table", "inet", blockTable)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "packets" {
			return strconv.Atoi(f[i+1])
		}
	}
	return 0, fmt.Errorf("no counter in the gossip block on %s:\n%s", host, out)
}

// nftStdin loads an nftables script inside namespace ns, atomically.
func nftStdin(ctx context.Context, ns, script string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
