package lab

import (
	"context"
	"fmt"
	"strings"
)

// The internet gateway stand-in. On AWS a NAT instance masquerades to its own private address
// and the internet gateway translates that address one-to-one: to the Elastic IP on the
// instance that holds it, to the instance's own public address otherwise. The lab's `igw`
// namespace does the same with two nftables maps and no connection tracking, so a flow's
// reply tuple on the new NAT differs from the old one's exactly as on AWS. The VPC stand-in
// rewrites the maps whenever moto moves the Elastic IP.

// igwTable is the nftables table of the gateway: outbound packets from the public subnet get
// the public address their source maps to, inbound packets the private address their
// destination maps to; a packet with no mapping is dropped, as AWS drops traffic of an
// instance without a public address.
const igwTable = `table ip igw {
  map public {
    type ipv4_addr : ipv4_addr
  }
  map private {
    type ipv4_addr : ipv4_addr
  }
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    iifname "pub0" ip saddr set ip saddr map @public notrack accept
    iifname "pub0" drop
    iifname "inet0" ip daddr set ip daddr map @private notrack accept
    iifname "inet0" drop
  }
}
`

// startIGW sets up the gateway namespace: forwarding, its table and the mapping pairs
// (private → public address; nil: every NAT to its own public address, the Elastic IP
// nowhere, until the VPC stand-in places it on its first read).
func startIGW(ctx context.Context, pairs [][2]string) error {
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
		if err := sysctl(ctx, NS(IGW), kv[0], kv[1]); err != nil {
			return err
		}
	}
	if pairs == nil {
		pairs = natMapping("")
	}
	if err := nftIn(ctx, IGW, igwTable+igwScript(pairs)); err != nil {
		return fmt.Errorf("internet gateway: %w", err)
	}
	return nil
}

// natMapping is the two-NAT lab's mapping: the Elastic IP to eipHost's private address ("" =
// the EIP maps nowhere) and every other NAT to its own public address.
func natMapping(eipHost string) [][2]string {
	var pairs [][2]string
	for _, h := range []string{Nat1, Nat2} {
		public := natPublic(h)
		if h == eipHost {
			public = ElasticIP
		}
		pairs = append(pairs, [2]string{natPubIP(h), public})
	}
	return pairs
}

// igwScript is the nft script that replaces the gateway's mapping with pairs (private →
// public address, both ways), in one transaction.
func igwScript(pairs [][2]string) string {
	var pub, priv []string
	for _, p := range pairs {
		pub = append(pub, p[0]+" : "+p[1])
		priv = append(priv, p[1]+" : "+p[0])
	}
	s := "flush map ip igw public\nflush map ip igw private\n"
	if len(pairs) > 0 {
		s += fmt.Sprintf("add element ip igw public { %s }\nadd element ip igw private { %s }\n", strings.Join(pub, ", "), strings.Join(priv, ", "))
	}
	return s
}

// mapEIP makes the gateway translate the Elastic IP to host's private address ("" = nowhere).
func mapEIP(ctx context.Context, host string) error {
	if err := nftIn(ctx, IGW, igwScript(natMapping(host))); err != nil {
		return fmt.Errorf("map eip to %s: %w", orNone(host), err)
	}
	return nil
}

// natDefaultRoute points a NAT's default route at the gateway of its public subnet.
func natDefaultRoute(ctx context.Context, host string) error {
	return nsIP(ctx, NS(host), "route", "replace", "default", "via", IGWSubnetIP, "dev", "pub0")
}
