package agent

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent/conntrack"
	"github.com/natganker/natganker/ec2"
)

// fakeFlows is a conntrack table in memory: flows are added by the test and reported to the
// watcher as the kernel would; installs are recorded.
type fakeFlows struct {
	mu        sync.Mutex
	local     netip.Addr
	flows     map[netip.AddrPort]conntrack.Flow
	emit      func(conntrack.Record)
	installed []conntrack.Flow
	holds     []bool
}

func newFakeFlows(local string) *fakeFlows {
	return &fakeFlows{local: netip.MustParseAddr(local), flows: map[netip.AddrPort]conntrack.Flow{}}
}

func (f *fakeFlows) add(fl conntrack.Flow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows[fl.Src] = fl
	if f.emit != nil {
		f.emit(conntrack.Record{Op: conntrack.OpPut, Flow: fl})
	}
}

func (f *fakeFlows) Watch(ctx context.Context, emit func(conntrack.Record)) error {
	f.mu.Lock()
	f.emit = emit
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	f.emit = nil
	f.mu.Unlock()
	return ctx.Err()
}

func (f *fakeFlows) Snapshot() ([]conntrack.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []conntrack.Flow
	for _, fl := range f.flows {
		out = append(out, fl)
	}
	return out, nil
}

func (f *fakeFlows) Install(flows []conntrack.Flow) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installed = append(f.installed, flows...)
	return len(flows), 0, nil
}

func (f *fakeFlows) Check() error { return nil }

func (f *fakeFlows) LocalAddr() (netip.Addr, bool) { return f.local, true }

func (f *fakeFlows) Hold(holding bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holds = append(f.holds, holding)
	return nil
}

func (f *fakeFlows) RemoveGuard() error { return nil }

func (f *fakeFlows) EIPSeen() (bool, error) { return true, nil }

// lastHold is the guard's last state, and whether it was ever set.
func (f *fakeFlows) lastHold() (holding, set bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.holds) == 0 {
		return false, false
	}
	return f.holds[len(f.holds)-1], true
}

func (f *fakeFlows) installedFlows() map[netip.AddrPort]conntrack.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[netip.AddrPort]conntrack.Flow{}
	for _, fl := range f.installed {
		out[fl.Src] = fl
	}
	return out
}

// TestCluster_FlowSync: the owner's masqueraded flows reach the backup, those there before
// (a resync) and those after (deltas), over the sealed gossip; when the owner dies the
// backup installs them as it takes over, mapped to its own address with the same ports.
func TestCluster_FlowSync(t *testing.T) {
	c := newCluster(t, 200, 100)
	owner, backup := newFakeFlows("198.18.1.11"), newFakeFlows("198.18.1.12")
	c.flows = map[int]FlowSource{0: owner, 1: backup}
	flow := func(port uint16, nat uint16) conntrack.Flow {
		return conntrack.Flow{Proto: conntrack.TCP, Src: netip.AddrPortFrom(netip.MustParseAddr("198.18.1.100"), port),
			Dst: netip.MustParseAddrPort("198.19.0.1:443"), NAT: netip.AddrPortFrom(owner.local, nat),
			Status: conntrack.StatusSeenReply | conntrack.StatusAssured, TCPState: conntrack.TCPEstablished, Timeout: 3600}
	}
	before, after := flow(40000, 40000), flow(40001, 61001)
	owner.add(before)
	ag := c.up()
	c.waitOwner(0, 10*time.Second)
	owner.add(after)
	ownerID := c.world.Instances[0].ID
	for deadline := time.Now().Add(15 * time.Second); len(ag[1].flows.table.Flows(ownerID, time.Now())) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the backup holds %d of the owner's 2 flows", len(ag[1].flows.table.Flows(ownerID, time.Now())))
		}
	}
	st, err := ag[1].Status(context.Background())
	if err != nil || st.ConntrackSync == nil || st.ConntrackSync.Held[ownerID] != 2 || st.ConntrackSync.Sending {
		t.Fatalf("backup's status: %+v (%v), want 2 flows held of the owner, not sending", st.ConntrackSync, err)
	}
	// The guard: the owner holds the Elastic IP, the backup does not.
	waitHold(t, "owner", owner, true)
	waitHold(t, "backup", backup, false)
	// A peer's word that it is taking the group over stops the owner's connections at once;
	// EC2 still showing this node as the owner a while later releases them.
	if err := ag[1].do(context.Background(), func() { ag[1].tellTakeover(ownerID) }); err != nil {
		t.Fatal(err)
	}
	waitHold(t, "owner told of a takeover", owner, false)
	if !c.logged("a peer is taking a group over from this node") {
		t.Error("no log line for the takeover notice")
	}
	waitHold(t, "owner, the takeover not having happened", owner, true)
	c.kill(0)
	c.waitOwner(1, takeoverBound)
	waitHold(t, "backup after its takeover", backup, true)
	var got map[netip.AddrPort]conntrack.Flow
	for deadline := time.Now().Add(takeoverBound); ; time.Sleep(20 * time.Millisecond) {
		if got = backup.installedFlows(); len(got) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backup installed %d of the 2 flows", len(got))
		}
	}
	for _, want := range []conntrack.Flow{before, after} {
		g := got[want.Src]
		if g.NAT != netip.AddrPortFrom(backup.local, want.NAT.Port()) || g.Dst != want.Dst || g.TCPState != want.TCPState || g.Mark != conntrack.FlowMark {
			t.Errorf("installed %+v, want %+v mapped to %s and marked", g, want, backup.local)
		}
	}
	if !c.logged("connection sync: installed the former owner's flows") {
		t.Error("no log line for the installed flows")
	}
	if st, err := ag[1].Status(context.Background()); err != nil || st.ConntrackSync.Installed < 2 {
		t.Errorf("backup's status after the takeover: %+v (%v), want at least 2 installed", st.ConntrackSync, err)
	}
}

// waitHold waits until the guard of f was last set to holding.
func waitHold(t *testing.T, who string, f *fakeFlows, holding bool) {
	t.Helper()
	for deadline := time.Now().Add(takeoverBound); ; time.Sleep(20 * time.Millisecond) {
		if h, set := f.lastHold(); set && h == holding {
			return
		}
		if time.Now().After(deadline) {
			h, set := f.lastHold()
			t.Fatalf("%s: guard holding=%v (set %v), want holding=%v", who, h, set, holding)
		}
	}
}

// With several groups each group's flows were source-NATed to the address its Elastic IP sat
// on at the former owner: a takeover of one group installs those alone, mapped to this node's
// address for the group; with one group, every flow, mapped to the public interface's address.
func TestInstallFlows_PerGroupAddress(t *testing.T) {
	src := newFakeFlows("198.18.1.13")
	a := &Agent{id: ec2.Identity{InstanceID: "i-self"}, logger: hclog.NewNullLogger(),
		flows: &flowSync{src: src, table: conntrack.NewTable(100)}}
	flow := func(port uint16, nat string) conntrack.Flow {
		return conntrack.Flow{Proto: conntrack.TCP, Src: netip.AddrPortFrom(netip.MustParseAddr("198.18.1.100"), port),
			Dst: netip.MustParseAddrPort("198.19.0.1:443"), NAT: netip.MustParseAddrPort(nat),
			Status: conntrack.StatusSeenReply | conntrack.StatusAssured, TCPState: conntrack.TCPEstablished, Timeout: 3600}
	}
	var recs []conntrack.Record
	for _, f := range []conntrack.Flow{flow(40000, "198.18.1.11:40000"), flow(40001, "198.18.1.11:40001"), flow(40002, "198.18.1.21:61002")} {
		recs = append(recs, conntrack.Record{Op: conntrack.OpPut, Flow: f})
	}
	if err := a.flows.table.Apply(conntrack.Message{Kind: conntrack.KindDelta, Sender: "i-old", Records: recs}, time.Now()); err != nil {
		t.Fatal(err)
	}
	a.installFlows("i-old", netip.MustParseAddr("198.18.1.21"), netip.MustParseAddr("198.18.1.23"))
	got := src.installedFlows()
	if len(got) != 1 {
		t.Fatalf("installed %d flows for the second group, want 1: %v", len(got), got)
	}
	f := got[netip.MustParseAddrPort("198.18.1.100:40002")]
	if f.NAT != netip.MustParseAddrPort("198.18.1.23:61002") || f.Mark != conntrack.FlowMark {
		t.Errorf("installed %+v, want it mapped to 198.18.1.23:61002 and marked", f)
	}
	a.installFlows("i-old", netip.Addr{}, netip.Addr{})
	got = src.installedFlows()
	if len(got) != 3 {
		t.Fatalf("installed %d flows with one group, want all 3", len(got))
	}
	for _, f := range got {
		if f.NAT.Addr() != src.local {
			t.Errorf("installed %+v, want it mapped to %s", f, src.local)
		}
	}
}
