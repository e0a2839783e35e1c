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

// startIGW sets up the gateway namespace: forwarding, its table and the mapping with the
// Elastic IP on no instance (the VPC stand-in places it on its first read).
func startIGW(ctx context.Context) error {
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
		if err := sysctl(ctx, NS(IGW), kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := nftIn(ctx, IGW, igwTable+igwMapping("")); err != nil {
		return fmt.Errorf("internet gateway: %w", err)
	}
	return nil
}

// igwMapping is the nft script that maps the Elastic IP to eipHost's private address ("" =
// the EIP maps nowhere) and every other NAT to its own public address, in one transaction.
func igwMapping(eipHost string) string {
	var pub, priv []string
	for _, h := range []string{Nat1, Nat2} {
		public := natPublic(h)
		if h == eipHost {
			public = ElasticIP
		}
		pub = append(pub, natPubIP(h)+" : "+public)
		priv = append(priv, public+" : "+natPubIP(h))
	}
	return fmt.Sprintf("flush map ip igw public\nflush map ip igw private\nadd element ip igw public { %s }\nadd element ip igw private { %s }\n",
		strings.Join(pub, ", "), strings.Join(priv, ", "))
}

// mapEIP makes the gateway translate the Elastic IP to host's private address ("" = nowhere).
func mapEIP(ctx context.Context, host string) error {
	if err := nftIn(ctx, IGW, igwMapping(host)); err != nil {
		return fmt.Errorf("map eip to %s: %w", orNone(host), err)
	}
	return nil
}

// natDefaultRoute points a NAT's default route at the gateway of its public subnet.
func natDefaultRoute(ctx context.Context, host string) error {
	return nsIP(ctx, NS(host), "route", "replace", "default", "via", IGWSubnetIP, "dev", "pub0")
}
