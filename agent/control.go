package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

var _ Controller = (*Agent)(nil)

// StateOtherKey is the state members shows for an address whose gossip this node cannot
// decrypt.
const StateOtherKey = "other-key"

// errShuttingDown answers a takeover still waiting when the agent starts shutting down.
var errShuttingDown = errors.New("this node is shutting down")

// Members lists every peer this agent knows, itself included.
func (a *Agent) Members(ctx context.Context) ([]MemberView, error) {
	var out []MemberView
	// addReason adds note to what v's reason says.
	addReason := func(v *MemberView, note string) {
		switch {
		case note == "":
		case v.Reason == "":
			v.Reason = note
		default:
			v.Reason += "; " + note
		}
	}
	err := a.do(ctx, func() {
		healthy, reason := a.healthy()
		self := MemberView{Name: a.id.InstanceID, Address: a.gossip.LocalAddr(), State: string(gossip.StateAlive),
			Self: true, Healthy: healthy, Reason: reason}
		if a.leave != nil {
			self.State = "leaving"
		}
		for _, g := range a.groups {
			self.Groups = append(self.Groups, MemberGroupView{Name: g.cfg.Name, Priority: g.cfg.Priority,
				Yielded: g.yielded, Owns: g.owner == a.id.InstanceID, Ineligible: g.noRoom})
			addReason(&self, g.noRoom)
		}
		out = append(out, self)
		for _, m := range a.members {
			v := MemberView{Name: m.Name, Address: m.Addr, State: string(m.State), Healthy: m.MetaErr == "" && m.Meta.Healthy, Reason: m.Meta.Reason}
			if m.MetaErr != "" {
				v.Reason = "unreadable metadata: " + m.MetaErr
			}
			// A gossip port open for one protocol only leaves the peer as healthy as it
			// says, but it must show next to the peer.
			addReason(&v, m.Path)
			for _, name := range m.Meta.GroupNames() {
				gm := m.Meta.Groups[name]
				owns := gm.Owns
				// What EC2 said last beats what the peer said about itself.
				for _, g := range a.groups {
					if g.cfg.Name == name && g.observed {
						owns = g.owner == m.Name
					}
				}
				mg := MemberGroupView{Name: name, Priority: gm.Priority, Yielded: gm.Yielded, Owns: owns}
				if gm.NoRoom {
					mg.Ineligible = peerNoRoom
					addReason(&v, fmt.Sprintf("group %q: %s", name, peerNoRoom))
				}
				v.Groups = append(v.Groups, mg)
			}
			out = append(out, v)
		}
		// Nodes whose gossip cannot be decrypted are not members, but the operator must see
		// them: they are almost always a node set up with another key.
		for _, u := range a.gossip.Unreadable() {
			out = append(out, MemberView{Name: "?", Address: u.Addr, State: StateOtherKey,
				Reason: "sends gossip this node cannot decrypt: it uses a different gossip key (or none); last heard " + u.Last.UTC().Format(time.RFC3339)})
		}
		// A peer whose gossip port lets UDP through but not TCP cannot join, so it is no
		// member: show it with what blocks it, on the row of the departed member at its
		// address if there is one.
		for _, p := range a.gossip.PathProblems() {
			if m, ok := a.members[p.Name]; ok && m.State == gossip.StateAlive {
				continue // its own row carries the note
			}
			row := -1
			for i := range out {
				if !out[i].Self && out[i].Address == p.Addr {
					row = i
				}
			}
			if row >= 0 {
				addReason(&out[row], p.Note)
				continue
			}
			name := p.Name
			if name == "" {
				name = "?"
			}
			out = append(out, MemberView{Name: name, Address: p.Addr, State: "cannot-join", Reason: p.Note})
		}
	})
	sort.SliceStable(out[min(1, len(out)):], func(i, j int) bool {
		if out[i+1].Name != out[j+1].Name {
			return out[i+1].Name < out[j+1].Name
		}
		return out[i+1].Address < out[j+1].Address
	})
	return out, err
}

// Status reports, per group, who should own it and what EC2 said when last read.
func (a *Agent) Status(ctx context.Context) (StatusView, error) {
	sv := StatusView{Node: a.id.InstanceID, Version: a.deps.Version}
	err := a.do(ctx, func() {
		now := time.Now()
		for _, g := range a.groups {
			v := a.view(g, now)
			gv := GroupView{Name: g.cfg.Name, DesiredOwner: Desired(v.Peers), EC2Owner: g.owner, Yielded: g.yielded,
				ObservedAt: g.obs.ReadAt, LastTakeover: g.last, Ineligible: g.noRoom}
			if g.obsErr != nil {
				gv.ObserveError = g.obsErr.Error()
			}
			gv.ElasticIP = EIPView{AllocationID: g.obs.EIP.AllocationID, PublicIP: g.obs.EIP.PublicIP, InstanceID: g.obs.EIP.InstanceID,
				PrivateIP: g.obs.EIP.PrivateIP}
			for _, r := range g.obs.Routes {
				gv.Routes = append(gv.Routes, RouteView{RouteTableID: r.RouteTableID, Destination: r.Destination,
					Target: firstNonEmpty(r.InstanceID, r.ENIID, r.OtherTarget), State: r.State})
			}
			sv.Groups = append(sv.Groups, gv)
		}
	})
	if s := a.flows; s != nil {
		st := s.table.Stats()
		sv.ConntrackSync = &SyncView{Sending: s.owning.Load(), Held: s.table.Senders(), Dropped: st.Dropped, Installed: s.installed.Load()}
	}
	return sv, err
}

// Yield hands the groups to the next peer by priority; this node does not take them back
// until Resume or a restart.
func (a *Agent) Yield(ctx context.Context, groups []string) (ActionResult, error) {
	var res ActionResult
	err := a.onGroups(ctx, groups, &res, func(g *groupState) string {
		if g.yielded {
			return g.cfg.Name + ": already yielded"
		}
		g.yielded, g.force = true, false
		a.finishWaiters(g, fmt.Errorf("group %s was yielded", g.cfg.Name))
		next := Desired(a.view(g, time.Now()).Peers)
		if next == "" {
			return g.cfg.Name + ": yielded, but no eligible peer can take it: it stays where it is"
		}
		return fmt.Sprintf("%s: yielded to %s", g.cfg.Name, next)
	})
	return res, err
}

// Resume lets this node own the groups again, by the usual failback rules.
func (a *Agent) Resume(ctx context.Context, groups []string) (ActionResult, error) {
	var res ActionResult
	err := a.onGroups(ctx, groups, &res, func(g *groupState) string {
		if a.leave != nil && a.leave.notice != "" {
			return g.cfg.Name + ": not resumed: " + a.errLeaving().Error()
		}
		if !g.yielded {
			return g.cfg.Name + ": was not yielded"
		}
		g.yielded = false
		g.eligibleSince = time.Now()
		if g.cfg.Failback == config.FailbackManual {
			return g.cfg.Name + ": resumed (failback is manual: use takeover to move it here)"
		}
		return fmt.Sprintf("%s: resumed; takes the group back after %s if it has the highest priority", g.cfg.Name, g.cfg.FailbackDelay)
	})
	return res, err
}

// Takeover makes this node the owner of the groups now and waits for EC2 to agree.
func (a *Agent) Takeover(ctx context.Context, groups []string) (ActionResult, error) {
	var res ActionResult
	var waits []chan error
	var names []string
	err := a.onGroups(ctx, groups, &res, func(g *groupState) string {
		g.yielded = false
		g.force = true
		w := make(chan error, 1)
		g.waiters = append(g.waiters, w)
		waits = append(waits, w)
		names = append(names, g.cfg.Name)
		return ""
	})
	if err != nil {
		return res, err
	}
	var failed []string
	for i, w := range waits {
		select {
		case err := <-w:
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", names[i], err))
			} else {
				res.Message = joinLines(res.Message, names[i]+": this node owns the group")
			}
		case <-ctx.Done():
			return res, fmt.Errorf("takeover of %s: %w", names[i], ctx.Err())
		}
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("takeover failed: %s", strings.Join(failed, "; "))
	}
	return res, nil
}

// onGroups applies fn to the named groups (all when none are named) on the run goroutine.
func (a *Agent) onGroups(ctx context.Context, names []string, res *ActionResult, fn func(g *groupState) string) error {
	var unknown []string
	err := a.do(ctx, func() {
		var sel []*groupState
		if len(names) == 0 {
			sel = a.groups
		}
		for _, n := range names {
			found := false
			for _, g := range a.groups {
				if g.cfg.Name == n {
					sel, found = append(sel, g), true
				}
			}
			if !found {
				unknown = append(unknown, n)
			}
		}
		if len(unknown) > 0 {
			return
		}
		for _, g := range sel {
			res.Groups = append(res.Groups, g.cfg.Name)
			if msg := fn(g); msg != "" {
				res.Message = joinLines(res.Message, msg)
			}
		}
		a.publish()
	})
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: %s (this agent manages %s)", ErrUnknownGroup, strings.Join(unknown, ", "), strings.Join(a.groupNames(), ", "))
	}
	return nil
}

func joinLines(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n" + b
}

// GroupSpec is what the agent asks EC2 about for the configured group g of cfg, for tools
// such as `validate -remote` that read EC2 without running an agent. members are the
// cluster's instance ids, for discovery. The route tables the other groups name or tag are
// theirs alone: discovery never takes them for g.
func GroupSpec(cfg *config.Config, g config.Group, members []string) ec2.Group {
	s := ec2.Group{Name: g.Name, ElasticIP: g.ElasticIP, RouteTableIDs: g.RouteTables, RouteTableTags: g.RouteTableTags, Destinations: g.Destinations}
	s.AddressIndex, s.PinAddress = addressIndex(cfg, g.Name)
	if g.DiscoverRouteTables {
		s.DiscoverTargets = append([]string(nil), members...)
		sort.Strings(s.DiscoverTargets)
	}
	for _, o := range cfg.Groups {
		if o.Name != g.Name {
			s.OtherGroups = append(s.OtherGroups, ec2.TableSelection{Group: o.Name, RouteTableIDs: o.RouteTables, RouteTableTags: o.RouteTableTags, Destinations: o.Destinations})
		}
	}
	return s
}
