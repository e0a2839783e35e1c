package conntrack

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// On AWS a NAT masquerades to its own private address and the internet gateway maps that
// address to the Elastic IP only while the instance holds it; otherwise to the instance's own
// public address, if it has one. A TCP packet of a connection the server knows by the Elastic
// IP that leaves a NAT not (or no longer) holding it reaches the server from another address,
// and the server answers with a reset that kills the connection. During every ownership move
// there is such a moment: the routes and the Elastic IP move in separate calls, and either may
// land first. The guard drops those packets instead, so that TCP sends them again once the
// traffic and the address are on one NAT.
//
// Flows are told apart by a bit of the connection mark: set on every TCP flow this node starts
// while it holds the Elastic IP, and on every flow it installs from a former owner. While this
// node does not hold it, the guard drops forwarded TCP packets of marked flows going out (the
// original direction) and of flows picked up mid-stream (a first packet that is not a SYN: a
// connection this node never saw, which the server knows by another address). New connections
// pass unmarked: the server sees them from this node's own public address throughout.
//
// EC2 accepting the calls does not mean the gateway already maps the Elastic IP here: the
// route may reach the new NAT before the address does. A TCP packet of a marked flow coming in
// (the reply direction) can only have come through the Elastic IP, since none went out from
// here; the guard counts them, and the agent lifts the guard once one has arrived (EIPSeen).

// FlowMark is the connection-mark bit of a flow that belongs to the Elastic IP.
const FlowMark uint32 = 1 << 30

// GuardTable is the nftables table the guard keeps (family ip).
const GuardTable = "natganker_flows"

// Guard keeps the guard's rules in the kernel.
type Guard struct {
	// NetNS is the file descriptor of the network namespace to keep them in; 0 means this
	// process's.
	NetNS int

	mu      sync.Mutex
	applied bool
	holding bool
}

// Set makes the rules say whether this node holds the Elastic IP; it returns at once when
// they already do.
func (g *Guard) Set(holding bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.applied && g.holding == holding {
		return nil
	}
	c, err := g.conn()
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Name: GuardTable, Family: nftables.TableFamilyIPv4})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     "forward",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
	c.FlushChain(ch)
	for _, r := range guardRules(holding) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("load table ip %s: %w", GuardTable, err)
	}
	g.applied, g.holding = true, holding
	return nil
}

// Remove deletes the guard's table, if it is there.
func (g *Guard) Remove() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, err := g.conn()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Name: GuardTable, Family: nftables.TableFamilyIPv4})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete table ip %s: %w", GuardTable, err)
	}
	g.applied = false
	return nil
}

func (g *Guard) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if g.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(g.NetNS))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return c, nil
}

// guardRules are the forward chain's rules: while holding,
//
//	meta l4proto tcp ct state new ct mark set ct mark | FlowMark
//
// and otherwise
//
//	meta l4proto tcp ct direction reply ct mark & FlowMark == FlowMark counter
//	meta l4proto tcp ct direction original ct mark & FlowMark == FlowMark drop
//	meta l4proto tcp ct state new tcp flags & (syn | ack) != syn drop
func guardRules(holding bool) [][]expr.Any {
	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	stateNew := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
	join := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	drop := []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
	if holding {
		mark := []expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(^FlowMark), Xor: binaryutil.NativeEndian.PutUint32(FlowMark)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		}
		return [][]expr.Any{join(tcp, stateNew, mark)}
	}
	marked := []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(FlowMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
	midStream := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}}, // syn | ack
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x02}},
	}
	direction := func(d uint8) []expr.Any {
		return []expr.Any{
			&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{d}},
		}
	}
	counter := []expr.Any{&expr.Counter{}}
	return [][]expr.Any{
		join(tcp, direction(ctDirReply), marked, counter),
		join(tcp, direction(ctDirOriginal), marked, drop),
		join(tcp, stateNew, midStream, drop),
	}
}

// Conntrack directions (IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY).
const (
	ctDirOriginal = 0
	ctDirReply    = 1
)

// EIPSeen reports whether, since the guard last stopped holding, a TCP packet of a marked flow
// came in: the Elastic IP reaches this node.
func (g *Guard) EIPSeen() (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.applied || g.holding {
		return false, nil
	}
	c, err := g.conn()
	if err != nil {
		return false, err
	}
	t := &nftables.Table{Name: GuardTable, Family: nftables.TableFamilyIPv4}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "forward", Table: t})
	if err != nil {
		return false, fmt.Errorf("read table ip %s: %w", GuardTable, err)
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok && ctr.Packets > 0 {
				return true, nil
			}
		}
	}
	return false, nil
}
