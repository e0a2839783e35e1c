package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// With several groups, each group's Elastic IP sits on a private address of its own on the
// public interface (the primary address for the first group, a secondary one for each next),
// and AWS's internet gateway maps each private address to the Elastic IP associated with it.
// Masquerade would send every group's traffic out from the interface's primary address, so
// with the first group's Elastic IP. A group past the first therefore gets its own rules,
// ahead of the masquerade rule: traffic from its subnets is source-NATed to its private
// address. The agent learns the subnets and the address from EC2 and hands them over with
// SetSourceNAT.
//
// A secondary private IP assigned in EC2 is not necessarily configured in the OS. Source NAT
// to an address the kernel does not own would send packets whose answers nobody takes, so a
// rule is installed only while its address is configured on the public interface; until
// then the group's traffic keeps being masqueraded, and the log says so once.

// SourceNAT asks that traffic from Sources leaving the public interface be source-NATed to
// To instead of masqueraded.
type SourceNAT struct {
	// Group names the group the rule is for, in logs.
	Group string `json:"group"`
	// Sources are the IPv4 CIDR blocks of the group's subnets.
	Sources []netip.Prefix `json:"sources"`
	// To is the private address the group's Elastic IP is associated with.
	To netip.Addr `json:"to"`
}

// natRule is one rule of chain postrouting: `oifname IFACE ip saddr SOURCE` followed by
// `snat to TO`, or by `masquerade` when to is the zero Addr.
type natRule struct {
	group  string
	source netip.Prefix
	to     netip.Addr
}

func (r natRule) masquerade() bool { return !r.to.IsValid() }

// text is the rule as `nft list` shows it.
func (r natRule) text(iface string) string {
	s := fmt.Sprintf("oifname %q", iface)
	if r.source.Bits() > 0 {
		s += " ip saddr " + r.source.String()
	}
	if r.masquerade() {
		return s + " masquerade"
	}
	return s + " snat to " + r.to.String()
}

// SetSourceNAT replaces the source NAT rules the datapath should hold, in the order given
// (the first match wins). It changes nothing in the kernel: Check then reports the table
// Stale, and Ensure installs the rules whose address is configured on the public interface.
// Rules without an IPv4 address or without IPv4 sources are left out; an unmanaged datapath
// keeps them but only checks that some NAT is in place.
func (d *Datapath) SetSourceNAT(rules []SourceNAT) {
	var clean []SourceNAT
	for _, r := range rules {
		if !r.To.Is4() {
			continue
		}
		var srcs []netip.Prefix
		for _, p := range r.Sources {
			if p.IsValid() && p.Addr().Is4() && !slices.Contains(srcs, p.Masked()) {
				srcs = append(srcs, p.Masked())
			}
		}
		if len(srcs) > 0 {
			clean = append(clean, SourceNAT{Group: r.Group, Sources: srcs, To: r.To})
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.snat = clean
}

// wantedRules is what chain postrouting should hold now: a source NAT rule per source of
// each SourceNAT whose address is configured on the public interface, then the masquerade
// rule. It logs, once per change, a source NAT address that is missing from the interface
// and one that came back.
func (d *Datapath) wantedRules() []natRule {
	d.mu.Lock()
	none := len(d.snat) == 0 && len(d.missing) == 0
	d.mu.Unlock()
	if none {
		// One group, or none on a secondary address: the masquerade rule alone, no netlink.
		return []natRule{{source: d.source}}
	}
	have, ifaceErr := interfaceAddrs(d.cfg.PublicInterface)
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []natRule
	missing := map[netip.Addr]string{}
	for _, s := range d.snat {
		if ifaceErr == nil && !have[s.To] {
			missing[s.To] = s.Group
			continue
		}
		for _, p := range s.Sources {
			out = append(out, natRule{group: s.Group, source: p, to: s.To})
		}
	}
	if ifaceErr == nil {
		// Without the interface nothing is known (Check reports it missing): no word on
		// addresses until it is back.
		for a, g := range missing {
			if _, said := d.missing[a]; !said {
				d.logger.Warn("source NAT address not configured on the public interface: the group's traffic is masqueraded instead, and leaves with the primary address's Elastic IP",
					"group", g, "address", a.String(), "interface", d.cfg.PublicInterface,
					"fix", fmt.Sprintf("configure %s on %s in the OS (ec2-net-utils does it on Amazon Linux; netplan or ifupdown elsewhere)", a, d.cfg.PublicInterface))
			}
		}
		for a, g := range d.missing {
			if _, still := missing[a]; !still && slices.ContainsFunc(d.snat, func(s SourceNAT) bool { return s.To == a }) {
				d.logger.Info("source NAT address is configured on the public interface now", "group", g, "address", a.String(), "interface", d.cfg.PublicInterface)
			}
		}
		d.missing = missing
	}
	return append(out, natRule{source: d.source})
}

// interfaceAddrs lists the IPv4 addresses configured on an interface.
func interfaceAddrs(name string) (map[netip.Addr]bool, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	out := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				out[ip.Unmap()] = true
			}
		}
	}
	return out, nil
}
