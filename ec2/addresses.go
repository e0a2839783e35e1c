package ec2

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2 associates an Elastic IP with one private IPv4 address of a network interface (the
// primary one when the call names none), and associating a second Elastic IP with the same
// private address disassociates the first. A node that holds several groups at once must
// therefore put each group's Elastic IP on a private address of its own, or the groups
// displace each other's address at every repair. Group.PinAddress asks for that: the group's
// Elastic IP goes on the private address at position Group.AddressIndex of the interface the
// Elastic IP goes on, the primary address first and then the secondary ones in numeric order,
// and it counts as on this node only there. The agent numbers the groups by name, so every
// node, running the same configuration, agrees on each group's position without being told.

// Address is where a group's Elastic IP belongs on Self when Group.PinAddress is set.
type Address struct {
	// ENIID is the network interface the Elastic IP goes on.
	ENIID string
	// Index is Group.AddressIndex: 0 is the primary private address, 1 the first secondary.
	Index int
	// Want is the private address at Index; "" when the interface has fewer addresses.
	Want string
	// Have are the interface's private IPv4 addresses, the primary first, then the
	// secondary ones in numeric order.
	Have []string
}

// Short reports whether the interface has too few private addresses to hold the Elastic IP
// at its position.
func (a Address) Short() bool { return a.ENIID != "" && a.Want == "" }

// orderAddresses lists an interface's private IPv4 addresses: the primary first, then the
// secondary ones in numeric order, so that the order does not depend on how EC2 lists them.
func orderAddresses(ips []types.InstancePrivateIpAddress, primary string) []string {
	var out, second []string
	if primary != "" {
		out = append(out, primary)
	}
	for _, ip := range ips {
		a := aws.ToString(ip.PrivateIpAddress)
		switch {
		case a == "" || slices.Contains(out, a) || slices.Contains(second, a):
		case aws.ToBool(ip.Primary) && len(out) == 0:
			out = append(out, a)
		default:
			second = append(second, a)
		}
	}
	slices.SortFunc(second, func(a, b string) int {
		pa, errA := netip.ParseAddr(a)
		pb, errB := netip.ParseAddr(b)
		if errA != nil || errB != nil {
			return strings.Compare(a, b)
		}
		return pa.Compare(pb)
	})
	return append(out, second...)
}

// eipENI is the interface the Elastic IP goes on: the one AssociateAddress names, or the
// primary interface when it names the instance.
func (m me) eipENI() string {
	if _, eni := m.eipTarget(); eni != "" {
		return eni
	}
	return m.primaryENI
}

// pinAddress sets m's private address for group g from what the cache knows of the
// instance's interfaces.
func (m *me) pinAddress(g Group, info instanceInfo) {
	if !g.PinAddress {
		return
	}
	m.pin = true
	m.addr = Address{ENIID: m.eipENI(), Index: g.AddressIndex}
	for _, e := range info.attached {
		if e.id == m.addr.ENIID {
			m.addr.Have = e.addrs
		}
	}
	if g.AddressIndex >= 0 && g.AddressIndex < len(m.addr.Have) {
		m.addr.Want = m.addr.Have[g.AddressIndex]
	}
}

// holdsEIP reports whether the Elastic IP as read is on this instance, and, when the group's
// address is pinned, on its private address. An Elastic IP on another private address of this
// instance is not held: it is drift to move to the right address.
func (m me) holdsEIP(e EIP) bool {
	if !m.owns(e.InstanceID, e.ENIID) {
		return false
	}
	return !m.pin || (m.addr.Want != "" && e.PrivateIP == m.addr.Want)
}

// shortError says why the instance cannot hold the group's Elastic IP at its position.
func (a Address) shortError() error {
	return fmt.Errorf("interface %s has %d private %s, and this group's Elastic IP goes on address %d: assign it a secondary private IP",
		a.ENIID, len(a.Have), plural(len(a.Have), "address", "addresses"), a.Index+1)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
