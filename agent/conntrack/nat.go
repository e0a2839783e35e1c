// Package conntrack reads the kernel's masqueraded flows and installs them on another NAT
// over ctnetlink, so that a flow the owner masqueraded still has its mapping on the node that
// takes over.
//
// Reading (dumps and events) goes through github.com/ti-mo/conntrack. Installing a flow
// with its NAT mapping is written here: that library never sends the NAT attributes, and
// the kernel sets a mapping only from them (CTA_NAT_SRC with the address range and a nested
// CTA_NAT_PROTO carrying the port), whatever NAT bits the flow's status claims.
package conntrack

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ctnetlink message and attribute numbers (linux/netfilter/nfnetlink_conntrack.h).
const (
	subsysCTNetlink = 1 // NFNL_SUBSYS_CTNETLINK
	msgNew          = 0 // IPCTNL_MSG_CT_NEW

	ctaTupleOrig  = 1 // CTA_TUPLE_ORIG
	ctaTupleReply = 2 // CTA_TUPLE_REPLY
	ctaStatus     = 3 // CTA_STATUS
	ctaProtoInfo  = 4 // CTA_PROTOINFO
	ctaNATSrc     = 6 // CTA_NAT_SRC
	ctaTimeout    = 7 // CTA_TIMEOUT
	ctaMark       = 8 // CTA_MARK

	ctaTupleIP    = 1 // CTA_TUPLE_IP
	ctaTupleProto = 2 // CTA_TUPLE_PROTO
	ctaIPv4Src    = 1 // CTA_IP_V4_SRC
	ctaIPv4Dst    = 2 // CTA_IP_V4_DST

	ctaProtoNum     = 1 // CTA_PROTO_NUM
	ctaProtoSrcPort = 2 // CTA_PROTO_SRC_PORT
	ctaProtoDstPort = 3 // CTA_PROTO_DST_PORT

	ctaProtoInfoTCP           = 1 // CTA_PROTOINFO_TCP
	ctaProtoInfoTCPState      = 1 // CTA_PROTOINFO_TCP_STATE
	ctaProtoInfoTCPFlagsOrig  = 4 // CTA_PROTOINFO_TCP_FLAGS_ORIGINAL
	ctaProtoInfoTCPFlagsReply = 5 // CTA_PROTOINFO_TCP_FLAGS_REPLY

	ctaNATV4MinIP    = 1 // CTA_NAT_V4_MINIP
	ctaNATV4MaxIP    = 2 // CTA_NAT_V4_MAXIP
	ctaNATProto      = 3 // CTA_NAT_PROTO
	ctaProtoNATMin   = 1 // CTA_PROTONAT_PORT_MIN
	ctaProtoNATMax   = 2 // CTA_PROTONAT_PORT_MAX
	tcpFlagBeLiberal = 0x08
)

// Status bits a created flow may carry (linux/netfilter/nf_conntrack_common.h).
const (
	StatusSeenReply = 1 << 1 // IPS_SEEN_REPLY
	StatusAssured   = 1 << 2 // IPS_ASSURED
	statusConfirmed = 1 << 3 // IPS_CONFIRMED
)

// Protocol numbers of the flows a NAT replicates.
const (
	TCP = unix.IPPROTO_TCP
	UDP = unix.IPPROTO_UDP
)

// TCPEstablished is conntrack's TCP state for an established connection
// (TCP_CONNTRACK_ESTABLISHED).
const TCPEstablished = 3

// Flow is one masqueraded flow as a standby keeps it: the private host's connection to the
// outside and the address and port the NAT mapped its source to.
type Flow struct {
	Proto uint8
	// Src and Dst are the original direction: the private host and the server it reached.
	Src, Dst netip.AddrPort
	// NAT is where the reply goes: the NAT's own address and the port it mapped Src to.
	NAT netip.AddrPort
	// Status holds the flow's StatusSeenReply and StatusAssured bits; others are ignored.
	Status uint32
	// TCPState is conntrack's TCP state (TCP only).
	TCPState uint8
	// Timeout is how long, in seconds, the entry lives without a packet.
	Timeout uint32
	// Mark is the connection mark an installed flow gets (not replicated).
	Mark uint32
}

// validate reports what makes f impossible to install.
func (f Flow) validate() error {
	if err := f.validateKey(); err != nil {
		return err
	}
	if !f.NAT.IsValid() || !f.NAT.Addr().Is4() {
		return fmt.Errorf("flow %s → %s: NAT address %s is not IPv4", f.Src, f.Dst, f.NAT)
	}
	if f.Timeout == 0 {
		return errors.New("a flow needs a timeout")
	}
	return nil
}

// encodeNew is the body (nfgenmsg and attributes) of a request that creates f with its source
// mapped to f.NAT, so that the kernel's reply tuple runs from Dst back to f.NAT.
func encodeNew(f Flow) ([]byte, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	ae := netfilter.NewAttributeEncoder()
	tuple := func(typ uint16, src, dst netip.AddrPort) {
		ae.Nested(typ, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
				s, d := src.Addr().As4(), dst.Addr().As4()
				ae.Bytes(ctaIPv4Src, s[:])
				ae.Bytes(ctaIPv4Dst, d[:])
				return nil
			})
			ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
				ae.Uint8(ctaProtoNum, f.Proto)
				ae.Uint16(ctaProtoSrcPort, src.Port())
				ae.Uint16(ctaProtoDstPort, dst.Port())
				return nil
			})
			return nil
		})
	}
	// The reply tuple goes as if nothing were mapped; the kernel rewrites it to f.NAT from
	// CTA_NAT_SRC and marks the entry source-NATed only when that changes it. A reply tuple
	// sent already mapped would leave the entry unmarked, and its packets unrewritten.
	tuple(ctaTupleOrig, f.Src, f.Dst)
	tuple(ctaTupleReply, f.Dst, f.Src)
	// The kernel refuses (EBUSY) a status that differs from the new entry's in a bit
	// userspace may not change, and the entry it builds for a create is already confirmed.
	ae.Uint32(ctaStatus, f.Status&(StatusSeenReply|StatusAssured)|statusConfirmed)
	ae.Uint32(ctaTimeout, f.Timeout)
	if f.Mark != 0 {
		ae.Uint32(ctaMark, f.Mark)
	}
	if f.Proto == TCP {
		// The windows the owner tracked are not copied: the flow's windows are learnt
		// again from its next packets, liberally, as when a flow is picked up mid-stream.
		ae.Nested(ctaProtoInfo, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(ctaProtoInfoTCP, func(ae *netlink.AttributeEncoder) error {
				ae.Uint8(ctaProtoInfoTCPState, f.TCPState)
				liberal := []byte{tcpFlagBeLiberal, tcpFlagBeLiberal} // struct nf_ct_tcp_flags: flags, mask
				ae.Bytes(ctaProtoInfoTCPFlagsOrig, liberal)
				ae.Bytes(ctaProtoInfoTCPFlagsReply, liberal)
				return nil
			})
			return nil
		})
	}
	ae.Nested(ctaNATSrc, func(ae *netlink.AttributeEncoder) error {
		a := f.NAT.Addr().As4()
		ae.Bytes(ctaNATV4MinIP, a[:])
		ae.Bytes(ctaNATV4MaxIP, a[:])
		ae.Nested(ctaNATProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint16(ctaProtoNATMin, f.NAT.Port())
			ae.Uint16(ctaProtoNATMax, f.NAT.Port())
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	// nfgenmsg: family, version 0, resource id 0.
	return append([]byte{unix.AF_INET, 0, 0, 0}, attrs...), nil
}

// Installer creates flows with their NAT mapping in one network namespace's conntrack table.
type Installer struct {
	c *netlink.Conn
}

// NewInstaller opens ctnetlink in the namespace whose file descriptor is netns, or in this
// process's namespace when netns is 0.
func NewInstaller(netns int) (*Installer, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink: %w", err)
	}
	return &Installer{c: c}, nil
}

// Close closes the netlink socket.
func (i *Installer) Close() error { return i.c.Close() }

// Install creates f in the conntrack table with its source mapped to f.NAT. A flow whose
// original tuple is already there is an error the caller can tell with errors.Is(err,
// unix.EEXIST).
func (i *Installer) Install(f Flow) error {
	body, err := encodeNew(f)
	if err != nil {
		return fmt.Errorf("install flow %s → %s: %w", f.Src, f.Dst, err)
	}
	m := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(subsysCTNetlink<<8 | msgNew),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl,
		},
		Data: body,
	}
	if _, err := i.c.Execute(m); err != nil {
		return fmt.Errorf("install flow %s → %s via %s: %w", f.Src, f.Dst, f.NAT, err)
	}
	return nil
}
