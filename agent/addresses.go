package agent

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/natganker/natganker/agent/datapath"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// EC2 lets one Elastic IP sit on a private address: associating a second one with it
// disassociates the first. A node holding several groups puts each group's Elastic IP on a
// private address of its own (ec2.Group.PinAddress): the groups sorted by name, the i-th
// takes the i-th private address of the interface the Elastic IP goes on (the primary
// first, then the secondary ones in numeric order). The configuration is the same on every
// node, so every node agrees on each group's address without being told. A node whose
// interface has fewer addresses than a group's position is not eligible for that group: it
// says why in its log and in members, and tells its peers, so that one that can takes it.

// addressIndex is group name's position among the groups of cfg sorted by name, and whether
// the groups' Elastic IPs are pinned at all: only when there are several, so that a
// single group's Elastic IP is associated as it always was.
func addressIndex(cfg *config.Config, name string) (index int, pin bool) {
	names := groupsBefore(cfg, name)
	return len(names), len(cfg.Groups) > 1
}

// groupsBefore lists the groups that come before name in the order of addresses.
func groupsBefore(cfg *config.Config, name string) []string {
	var out []string
	for _, g := range cfg.Groups {
		if g.Name < name {
			out = append(out, g.Name)
		}
	}
	slices.Sort(out)
	return out
}

// NoRoomReason says why this node cannot hold group's Elastic IP at addr (ec2.Observation.Address),
// "" when it can (or when the group's Elastic IP is not pinned, or its address is not known yet).
func NoRoomReason(cfg *config.Config, group string, addr ec2.Address) string {
	if !addr.Short() {
		return ""
	}
	before := groupsBefore(cfg, group)
	quoted := make([]string, len(before))
	for i, b := range before {
		quoted[i] = fmt.Sprintf("%q's", b)
	}
	beside := "group " + strings.Join(quoted, ", ")
	if len(before) > 1 {
		beside = "groups " + strings.Join(quoted[:len(quoted)-1], ", ") + " and " + quoted[len(quoted)-1]
	}
	have := fmt.Sprintf("%d private address", len(addr.Have))
	if len(addr.Have) != 1 {
		have += "es"
	}
	fix := "assign it a secondary private IP"
	if n := addr.Index + 1 - len(addr.Have); n > 1 {
		fix = fmt.Sprintf("assign it %d more secondary private IPs", n)
	}
	return fmt.Sprintf("cannot hold group %q's Elastic IP beside %s: interface %s has %s; %s", group, beside, addr.ENIID, have, fix)
}

// peerNoRoom is what this node says of a peer that announces it cannot hold a group's
// Elastic IP: the peer's own log and members say more.
const peerNoRoom = "cannot hold this group's Elastic IP: its interface has too few private addresses (secondary private IPs)"

// noteRoom records, from a read of EC2, whether this node can hold g's Elastic IP, and logs
// each change once.
func (a *Agent) noteRoom(g *groupState, obs ec2.Observation, now time.Time) {
	why := NoRoomReason(a.cfg, g.cfg.Name, obs.Address)
	if why == g.noRoom {
		return
	}
	if why != "" {
		a.logger.Error("this node is not eligible for the group", "group", g.cfg.Name, "why", why)
	} else {
		a.logger.Info("this node can hold the group's Elastic IP again", "group", g.cfg.Name, "address", obs.Address.Want)
		g.eligibleSince = now
	}
	g.noRoom = why
}

// A group past the first has its Elastic IP on a secondary private address, and AWS's
// internet gateway gives traffic the Elastic IP of the private address it leaves from: the
// datapath must source-NAT the group's traffic to that address, or it leaves with the
// primary address's (another group's) Elastic IP. The group's traffic is what comes from the
// subnets associated with its route tables (ec2.Observation.SubnetCIDRs).

// SourceNATer takes the source NAT rules of the groups on secondary addresses.
// *datapath.Datapath implements it; a managed datapath installs them at its next check.
type SourceNATer interface {
	SetSourceNAT(rules []datapath.SourceNAT)
}

var _ SourceNATer = (*datapath.Datapath)(nil)

// GroupRead is one group's latest read of EC2, for SourceNATRules.
type GroupRead struct {
	Group string
	Obs   ec2.Observation
}

// SourceNATRules derives from the groups' latest reads the source NAT rules of this node:
// for each group whose Elastic IP goes on a secondary private address here (Address.Index
// past 0, Address.Want known), its subnets' traffic to that address, in the order of the
// addresses. The rules do not depend on who holds the group: traffic reaches this node only
// from the route tables pointing at it, and a node that holds a group holds its Elastic IP.
// A subnet that holds one of the interface's own addresses is left out, so that this node's
// own traffic (gossip, EC2 calls) keeps its address: a managed route table associated with
// the NAT's own subnet is a mistake, not traffic to translate.
func SourceNATRules(reads []GroupRead) []datapath.SourceNAT {
	var out []datapath.SourceNAT
	for _, r := range reads {
		a := r.Obs.Address
		to, err := netip.ParseAddr(a.Want)
		if a.Index < 1 || err != nil || !to.Is4() {
			continue
		}
		rule := datapath.SourceNAT{Group: r.Group, To: to}
		for _, c := range r.Obs.SubnetCIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil || slices.ContainsFunc(a.Have, func(h string) bool {
				ha, err := netip.ParseAddr(h)
				return err == nil && p.Contains(ha)
			}) {
				continue
			}
			rule.Sources = append(rule.Sources, p.Masked())
		}
		if len(rule.Sources) > 0 {
			out = append(out, rule)
		}
	}
	slices.SortStableFunc(out, func(x, y datapath.SourceNAT) int { return x.To.Compare(y.To) })
	return out
}

// noteSourceNAT hands the datapath the source NAT rules derived from the latest reads, and
// logs each change.
func (a *Agent) noteSourceNAT() {
	var reads []GroupRead
	for _, g := range a.groups {
		if g.observed {
			reads = append(reads, GroupRead{Group: g.cfg.Name, Obs: g.obs})
		}
	}
	rules := SourceNATRules(reads)
	if reflect.DeepEqual(rules, a.snat) {
		return
	}
	a.snat = rules
	for _, r := range rules {
		var srcs []string
		for _, p := range r.Sources {
			srcs = append(srcs, p.String())
		}
		a.logger.Info("group's traffic is source-NATed to its private address", "group", r.Group,
			"address", r.To.String(), "subnets", strings.Join(srcs, ","))
	}
	if len(rules) == 0 {
		a.logger.Info("no group's traffic is source-NATed: every subnet is masqueraded")
	}
	if s, ok := a.deps.Health.(SourceNATer); ok {
		s.SetSourceNAT(rules)
	}
}
