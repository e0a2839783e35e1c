package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/natganker/natganker/agent/datapath"
)

// Names of the nftables tables the chaos run adds inside a NAT. Both drop on input, so that
// packets vanish silently as they do in a VPC: dropped on output, sendto would fail with
// EPERM and tell the sender at once.
const (
	chaosPartitionTable = "chaospart"
	chaosLossTable      = "chaosloss"
)

// nftIn loads an nftables script inside host's namespace.
func nftIn(ctx context.Context, host, script string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", NS(host), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", host, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removeTable is an nft script that removes an inet table whether or not it exists (nft 1.0.6
// has no `destroy`): adding an existing table is a no-op, and both run in one transaction.
func removeTable(name string) string {
	return fmt.Sprintf("add table inet %[1]s\ndelete table inet %[1]s\n", name)
}

// dropFromPeer makes host drop every packet from its peer's private address (on) or stop
// doing so (off): one direction of a partition between the NATs.
func dropFromPeer(ctx context.Context, host string, on bool) error {
	script := removeTable(chaosPartitionTable)
	if on {
		script += fmt.Sprintf(`table inet %[1]s {
  chain in {
    type filter hook input priority -300; policy accept;
    ip saddr %[2]s drop
  }
}
`, chaosPartitionTable, natIP(Peer(host)))
	}
	return nftIn(ctx, host, script)
}

// lossFromPeer makes host drop percent of the packets from its peer's private address at
// random (0 removes the rule).
func lossFromPeer(ctx context.Context, host string, percent int) error {
	script := removeTable(chaosLossTable)
	if percent > 0 {
		script += fmt.Sprintf(`table inet %[1]s {
  chain in {
    type filter hook input priority -290; policy accept;
    ip saddr %[2]s numgen random mod 100 < %[3]d drop
  }
}
`, chaosLossTable, natIP(Peer(host)), percent)
	}
	return nftIn(ctx, host, script)
}

// deleteMasquerade removes the agent's NAT table on host, as an operator's `nft flush
// ruleset` or a package upgrade would.
func deleteMasquerade(ctx context.Context, host string) error {
	_, err := nsRun(ctx, NS(host), "nft", "delete", "table", "ip", datapath.TableName)
	return err
}

// setLink takes one of host's interfaces up or down.
func setLink(ctx context.Context, host, dev string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := nsIP(ctx, NS(host), "link", "set", dev, state); err != nil {
		return err
	}
	// Taking an interface down removes the routes through it; its address's subnet route
	// comes back by itself, the default route does not.
	switch {
	case up && dev == "pub0":
		return natDefaultRoute(ctx, host)
	case up && dev == "eth0" && slices.Contains(ZoneNATs, host):
		return zonesDefaultRoute(ctx, host)
	}
	return nil
}

// nsHandle is an open network namespace, for reading its nftables state over netlink
// without starting a process.
type nsHandle struct{ f *os.File }

func openNS(host string) (*nsHandle, error) {
	f, err := os.Open("/run/netns/" + NS(host))
	if err != nil {
		return nil, fmt.Errorf("open namespace of %s: %w", host, err)
	}
	return &nsHandle{f: f}, nil
}

func (h *nsHandle) Close() error { return h.f.Close() }

// masquerade reports whether the agent's masquerade rule is in place: table ip natganker,
// its postrouting chain, and at least one rule in it.
func (h *nsHandle) masquerade() (bool, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(h.f.Fd())))
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name != datapath.TableName {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return false, err
		}
		for _, ch := range chains {
			if ch.Table.Name == t.Name && ch.Name == datapath.ChainName {
				rules, err := c.GetRules(t, ch)
				if err != nil {
					return false, err
				}
				return len(rules) > 0, nil
			}
		}
	}
	return false, nil
}
