package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// reasonRuleMissing is the Health.Reason when our masquerade rule is not installed.
const reasonRuleMissing = "masquerade rule missing"

// nftTimeout bounds a netlink exchange when the context has no deadline.
const nftTimeout = 5 * time.Second

// dialNFT returns an nftables connection in the current network namespace whose netlink
// sockets give up at ctx's deadline, so that a wedged kernel cannot hang Check.
func dialNFT(ctx context.Context) (*nftables.Conn, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(nftTimeout)
	}
	c, err := nftables.New(nftables.WithSockOptions(func(nc *netlink.Conn) error {
		return nc.SetDeadline(deadline)
	}))
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink: %w", err)
	}
	return c, nil
}

func ourTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

func ourChain(t *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
		Policy:   &accept,
	}
}

// masqueradeExprs is `oifname IFACE ip saddr SOURCE masquerade`.
func masqueradeExprs(iface string, source netip.Prefix) []expr.Any {
	return ruleExprs(iface, natRule{source: source})
}

// ruleExprs is r expressed the way nft(8) compiles it, so that `nft list table ip natganker`
// shows exactly `oifname IFACE ip saddr SOURCE masquerade` or `… snat to ADDRESS`.
func ruleExprs(iface string, r natRule) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ) // nft compares the whole zero-padded name
	copy(name, iface)
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
	}
	if bits := r.source.Bits(); bits > 0 {
		exprs = append(exprs, &expr.Payload{
			DestRegister: 1,
			Base:         expr.PayloadBaseNetworkHeader,
			Offset:       12, // IPv4 source address
			Len:          4,
		})
		if bits < 32 {
			m := prefixMask(bits)
			exprs = append(exprs, &expr.Bitwise{
				SourceRegister: 1,
				DestRegister:   1,
				Len:            4,
				Mask:           m,
				Xor:            []byte{0, 0, 0, 0},
			})
		}
		addr := r.source.Addr().As4()
		exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]})
	}
	if r.masquerade() {
		return append(exprs, &expr.Masq{})
	}
	// The kernel reports the range's end in the register of its start when a rule gives only
	// the start, as nft(8) does; giving both makes the rule read back as it was written.
	to := r.to.As4()
	return append(exprs,
		&expr.Immediate{Register: 1, Data: to[:]},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1},
	)
}

func prefixMask(bits int) []byte {
	m := make([]byte, 4)
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

// inspectTable compares table ip natganker with one holding the rules want and returns ""
// when it matches, or the first difference.
func (d *Datapath) inspectTable(c *nftables.Conn, want []natRule) (string, error) {
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return reasonRuleMissing, nil
	}
	if err != nil {
		return "", fmt.Errorf("get table ip %s: %w", TableName, err)
	}
	if tableFlags(t)&unix.NFT_TABLE_F_DORMANT != 0 {
		return fmt.Sprintf("table ip %s is dormant", TableName), nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return "", fmt.Errorf("list ip chains: %w", err)
	}
	wantChain := ourChain(t)
	var found *nftables.Chain
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		if ch.Name != ChainName {
			return fmt.Sprintf("unexpected chain %s in table ip %s", ch.Name, TableName), nil
		}
		found = ch
	}
	if found == nil {
		return reasonRuleMissing, nil
	}
	if found.Type != wantChain.Type || found.Hooknum == nil || *found.Hooknum != *wantChain.Hooknum ||
		found.Priority == nil || *found.Priority != *wantChain.Priority {
		return fmt.Sprintf("chain %s is not a nat postrouting chain at priority srcnat", ChainName), nil
	}
	if found.Policy == nil || *found.Policy != *wantChain.Policy {
		return fmt.Sprintf("chain %s policy is not accept", ChainName), nil
	}
	rules, err := c.GetRules(t, found)
	if err != nil {
		return "", fmt.Errorf("list rules of chain %s: %w", ChainName, err)
	}
	switch {
	case len(rules) == 0:
		return reasonRuleMissing, nil
	case len(rules) != len(want):
		return fmt.Sprintf("%d %s in chain %s, want %d", len(rules), plural(len(rules), "rule", "rules"), ChainName, len(want)), nil
	}
	for i, r := range want {
		if reflect.DeepEqual(rules[i].Exprs, ruleExprs(d.cfg.PublicInterface, r)) {
			continue
		}
		if r.masquerade() {
			return "masquerade rule differs from " + r.text(d.cfg.PublicInterface), nil
		}
		return fmt.Sprintf("rule %d differs from %s (source NAT of group %q)", i+1, r.text(d.cfg.PublicInterface), r.group), nil
	}
	return "", nil
}

// tableFlags returns the flags of a table listed by nftables v0.3.0, which decodes the
// big-endian NFTA_TABLE_FLAGS attribute in host byte order; this undoes that. The Dormant
// case of TestDatapath_CheckAndRepair fails if an upgrade fixes the decoding.
func tableFlags(t *nftables.Table) uint32 {
	return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, t.Flags))
}

// ensureTable replaces table ip natganker unless it already is what it should be. The
// replacement is one nftables transaction (create table if missing, delete it, create it
// with its chain and rules), so the kernel never runs without the masquerade rule or with
// two of them.
func (d *Datapath) ensureTable(ctx context.Context) error {
	c, err := dialNFT(ctx)
	if err != nil {
		return err
	}
	want := d.wantedRules()
	reason, err := d.inspectTable(c, want)
	if err != nil {
		return err
	}
	if reason == "" {
		d.setInstalled(want)
		return nil
	}
	if d.isInstalled(c) {
		reason = "source NAT rules or addresses changed"
	}
	t := ourTable()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(ourChain(t))
	for _, r := range want {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ruleExprs(d.cfg.PublicInterface, r)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install table ip %s: %w", TableName, err)
	}
	after, err := d.inspectTable(c, want)
	if err != nil {
		return fmt.Errorf("verify table ip %s: %w", TableName, err)
	}
	if after != "" {
		return fmt.Errorf("verify table ip %s: %s", TableName, after)
	}
	before := d.setInstalled(want)
	for _, r := range before {
		if !r.masquerade() && !slices.Contains(want, r) {
			d.logger.Info("removed source NAT rule", "group", r.group, "oifname", d.cfg.PublicInterface,
				"saddr", r.source.String(), "snat_to", r.to.String())
		}
	}
	for _, r := range want {
		if r.masquerade() {
			d.logger.Info("installed masquerade rule", "table", "ip "+TableName, "chain", ChainName,
				"oifname", d.cfg.PublicInterface, "saddr", r.source.String(), "was", reason)
			continue
		}
		d.logger.Info("installed source NAT rule", "group", r.group, "table", "ip "+TableName, "chain", ChainName,
			"oifname", d.cfg.PublicInterface, "saddr", r.source.String(), "snat_to", r.to.String(), "was", reason)
	}
	return nil
}

// setInstalled records the rules just found or put in place, and returns the ones before.
func (d *Datapath) setInstalled(rules []natRule) []natRule {
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.installed
	d.installed = rules
	return before
}

// isInstalled reports whether the table holds exactly the rules this Datapath installed
// last: a table that differs from the wanted rules only because they changed since.
func (d *Datapath) isInstalled(c *nftables.Conn) bool {
	d.mu.Lock()
	installed := d.installed
	d.mu.Unlock()
	if installed == nil {
		return false
	}
	reason, err := d.inspectTable(c, installed)
	return err == nil && reason == ""
}

// removeTable deletes table ip natganker if present; creating it first in the same
// transaction makes the delete succeed whether or not it existed.
func (d *Datapath) removeTable(ctx context.Context) error {
	c, err := dialNFT(ctx)
	if err != nil {
		return err
	}
	_, err = c.ListTableOfFamily(TableName, nftables.TableFamilyIPv4)
	existed := err == nil
	t := ourTable()
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete table ip %s: %w", TableName, err)
	}
	if existed {
		d.logger.Info("removed nftables table", "table", "ip "+TableName)
	}
	return nil
}

// checkNAT returns "" when NAT is in place and a reason otherwise. A managed datapath must
// have exactly our table; an unmanaged one needs some masquerade or SNAT rule in a
// postrouting NAT chain (rules of iptables-legacy are invisible here). stale is set when
// our table holds the rules installed last, but the wanted ones have changed since (new
// source NAT rules, an address added to or removed from the interface): Ensure's work, not
// a fault.
func (d *Datapath) checkNAT(ctx context.Context) (reason string, stale bool) {
	c, err := dialNFT(ctx)
	if err != nil {
		return fmt.Sprintf("cannot read nftables: %v", err), false
	}
	if d.cfg.Manage {
		reason, err := d.inspectTable(c, d.wantedRules())
		if err != nil {
			return fmt.Sprintf("cannot read nftables: %v", err), false
		}
		if reason != "" && d.isInstalled(c) {
			return "", true
		}
		return reason, false
	}
	ok, err := anyMasquerade(c)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot read nftables: %v", err), false
	case !ok:
		return reasonRuleMissing, false
	}
	return "", false
}

// anyMasquerade reports whether any postrouting NAT chain of an ip or inet table holds a
// rule that masquerades or source-NATs, whether written by nft or by iptables-nft.
func anyMasquerade(c *nftables.Conn) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyUnspecified)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Type != nftables.ChainTypeNAT || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookPostrouting {
			continue
		}
		if f := ch.Table.Family; f != nftables.TableFamilyIPv4 && f != nftables.TableFamilyINet {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Masq:
					return true, nil
				case *expr.NAT:
					if e.Type == expr.NATTypeSourceNAT {
						return true, nil
					}
				case *expr.Target:
					if e.Name == "MASQUERADE" || e.Name == "SNAT" {
						return true, nil
					}
				}
			}
		}
	}
	return false, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
