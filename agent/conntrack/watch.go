package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// watchReadBuffer is the socket buffer asked for conntrack events: a burst of new flows must
// not overflow it while the reader is busy. An overflow is not silent (ErrLostEvents).
const watchReadBuffer = 8 << 20

// ErrLostEvents means the kernel dropped events the watcher could not read in time: what a
// peer was told is no longer complete, and only a full resync makes it so again.
var ErrLostEvents = errors.New("conntrack events were lost")

// fromKernel returns the flow a masqueraded IPv4 TCP or UDP entry stands for; ok is false
// for anything else (not source-NATed, another protocol, IPv6).
func fromKernel(f ct.Flow) (Flow, bool) {
	p := f.TupleOrig.Proto.Protocol
	if !f.Status.SrcNAT() || (p != TCP && p != UDP) || !f.TupleOrig.IP.SourceAddress.Is4() {
		return Flow{}, false
	}
	out := Flow{
		Proto:   p,
		Src:     netip.AddrPortFrom(f.TupleOrig.IP.SourceAddress, f.TupleOrig.Proto.SourcePort),
		Dst:     netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort),
		NAT:     netip.AddrPortFrom(f.TupleReply.IP.DestinationAddress, f.TupleReply.Proto.DestinationPort),
		Status:  uint32(f.Status) & (StatusSeenReply | StatusAssured),
		Timeout: f.Timeout,
	}
	if p == TCP && f.ProtoInfo.TCP != nil {
		out.TCPState = f.ProtoInfo.TCP.State
	}
	return out, out.NAT.Addr().Is4()
}

// Snapshot returns every masqueraded flow in the conntrack table of the namespace whose file
// descriptor is netns (0: this process's).
func Snapshot(netns int) ([]Flow, error) {
	c, err := ct.Dial(&netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink: %w", err)
	}
	defer c.Close()
	all, err := c.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("read the conntrack table: %w", err)
	}
	var out []Flow
	for _, f := range all {
		if fl, ok := fromKernel(f); ok {
			out = append(out, fl)
		}
	}
	return out, nil
}

// Watch follows the masqueraded flows of the namespace whose file descriptor is netns (0:
// this process's) and calls emit with a put for each new or changed one and a delete for
// each one that ends, until ctx ends. It returns ErrLostEvents (wrapped) when the kernel
// dropped events: the caller resyncs and watches again.
func Watch(ctx context.Context, netns int, emit func(Record)) error {
	c, err := ct.Dial(&netlink.Config{NetNS: netns})
	if err != nil {
		return fmt.Errorf("open ctnetlink: %w", err)
	}
	if err := c.SetReadBuffer(watchReadBuffer); err != nil {
		c.Close()
		return fmt.Errorf("size the conntrack event buffer: %w", err)
	}
	events := make(chan ct.Event, 256)
	errs, err := c.Listen(events, 1, netfilter.GroupsCT)
	if err != nil {
		c.Close()
		return fmt.Errorf("follow conntrack events: %w", err)
	}
	// Closing the socket ends the reader, which may be waiting to hand over an event or an
	// error: keep taking them until it is gone.
	stop := func() {
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		for {
			select {
			case <-events:
			case <-errs:
			case <-closed:
				return
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case err := <-errs:
			go stop()
			return fmt.Errorf("%w: %v", ErrLostEvents, err)
		case ev := <-events:
			if ev.Flow == nil {
				continue
			}
			f, ok := fromKernel(*ev.Flow)
			if !ok {
				continue
			}
			op := OpPut
			if ev.Type == ct.EventDestroy {
				op = OpDelete
			}
			emit(Record{Op: op, Flow: f})
		}
	}
}
