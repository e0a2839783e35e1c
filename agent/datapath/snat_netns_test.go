package datapath

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// The source NAT lab: the NAT namespace's public interface pub0 has the primary address
// 198.18.0.1 and, where a test adds it, the secondary 198.18.0.3 (group "az-b"'s private
// address). Two private subnets sit behind it: 198.18.1.0/24 ("az-a", masqueraded) and
// 198.18.2.0/24 ("az-b", source-NATed to the secondary address). The far namespace's
// server records the source address of every connection it accepts, as the internet
// gateway would see it.
const (
	snatSecondary = "198.18.0.3"
	snatTarget    = labFarAddr + ":9000"
)

var azB = SourceNAT{
	Group:   "az-b",
	Sources: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24")},
	To:      netip.MustParseAddr(snatSecondary),
}

// wantSNATTable is `nft list table ip natganker` with az-b's rule installed.
const wantSNATTable = `table ip natganker {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "pub0" ip saddr 198.18.2.0/24 snat to 198.18.0.3
		oifname "pub0" ip saddr 198.18.0.0/16 masquerade
	}
}
`

type snatLab struct {
	*lab
	far, nat, azA, azB *helper
}

func newSNATLab(t *testing.T) *snatLab {
	t.Helper()
	l := &snatLab{lab: newLab(t)}
	l.far = startHelper(t, l.lab.far)
	if r := l.far.do(helperRequest{Op: "listen", Addr: snatTarget}); r.Err != "" {
		t.Fatalf("listen %s: %s", snatTarget, r.Err)
	}
	l.azA = startHelper(t, l.addClient("priv1", 1))
	l.azB = startHelper(t, l.addClient("priv2", 2))
	l.nat = startHelper(t, l.ns)
	l.nat.newDatapath(managedConfig())
	return l
}

// addClient puts a host 198.18.N.2 behind the NAT namespace's 198.18.N.1 on interface ifname.
func (l *lab) addClient(ifname string, n int) string {
	l.t.Helper()
	ns := newNamespace(l.t, "ngdp-cli-")
	gw, host := "198.18."+strconv.Itoa(n)+".1", "198.18."+strconv.Itoa(n)+".2"
	run(l.t, "ip", "-n", l.ns, "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(l.t, "ip", "-n", l.ns, "addr", "add", gw+"/24", "dev", ifname)
	run(l.t, "ip", "-n", l.ns, "link", "set", ifname, "up")
	run(l.t, "ip", "-n", ns, "addr", "add", host+"/24", "dev", "eth0")
	run(l.t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(l.t, "ip", "-n", ns, "route", "add", "default", "via", gw)
	return ns
}

// seenFrom connects from a client to the far server and returns the source address the
// server saw.
func (l *snatLab) seenFrom(cli *helper) string {
	l.t.Helper()
	before := len(l.far.do(helperRequest{Op: "accepted"}).Addrs)
	if r := cli.do(helperRequest{Op: "dial", Addr: snatTarget}); r.Err != "" {
		l.t.Fatalf("dial %s: %s", snatTarget, r.Err)
	}
	host, _, err := net.SplitHostPort(l.far.waitAccepted(before + 1)[before])
	if err != nil {
		l.t.Fatal(err)
	}
	return host
}

// wantSources asserts where each subnet's traffic comes from.
func (l *snatLab) wantSources(azA, azB string) {
	l.t.Helper()
	if got := l.seenFrom(l.azA); got != azA {
		l.t.Errorf("az-a's host (198.18.1.2) reached the server from %s, want %s", got, azA)
	}
	if got := l.seenFrom(l.azB); got != azB {
		l.t.Errorf("az-b's host (198.18.2.2) reached the server from %s, want %s", got, azB)
	}
}

func (l *snatLab) setSNAT(rules ...SourceNAT) {
	l.t.Helper()
	if r := l.nat.do(helperRequest{Op: "snat", SNAT: rules}); r.Err != "" {
		l.t.Fatalf("SetSourceNAT: %s", r.Err)
	}
}

// wantCheck asserts Check's verdict.
func (l *snatLab) wantCheck(want Health) {
	l.t.Helper()
	if got, _ := l.nat.check(); got != want {
		l.t.Fatalf("Check = %+v, want %+v", got, want)
	}
}

func TestDatapath_SourceNAT(t *testing.T) {
	l := newSNATLab(t)
	run(t, "ip", "-n", l.ns, "addr", "add", snatSecondary+"/24", "dev", labPublicIf)
	l.setSNAT(azB)
	l.nat.must("ensure")

	if got := l.nft("list", "table", "ip", TableName); got != wantSNATTable {
		t.Errorf("nft list table ip natganker:\n%s\nwant:\n%s", got, wantSNATTable)
	}
	l.wantCheck(Health{Healthy: true})
	l.wantSources(labPublicAddr, snatSecondary)

	before := l.nft("-a", "list", "table", "ip", TableName)
	l.nat.must("ensure")
	if after := l.nft("-a", "list", "table", "ip", TableName); after != before {
		t.Errorf("Ensure changed a correct table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestDatapath_SourceNATFollowsChanges: the wanted rules change under the datapath (the agent
// learns new subnets or addresses from EC2, an address is configured or removed in the OS);
// Check reports the table stale but healthy, and Ensure brings it up to date. A rule broken
// by someone else is a fault, as the masquerade rule's is. Each step starts from the last.
func TestDatapath_SourceNATFollowsChanges(t *testing.T) {
	l := newSNATLab(t)
	l.nat.must("ensure")
	l.wantSources(labPublicAddr, labPublicAddr)

	{
		t.Log("step: RulesGiven")
		run(t, "ip", "-n", l.ns, "addr", "add", snatSecondary+"/24", "dev", labPublicIf)
		l.setSNAT(azB)
		l.wantCheck(Health{Healthy: true, Stale: true})
		l.nat.must("ensure")
		l.wantCheck(Health{Healthy: true})
		l.wantSources(labPublicAddr, snatSecondary)
	}
	{
		t.Log("step: AddressRemovedFromInterface")
		run(t, "ip", "-n", l.ns, "addr", "del", snatSecondary+"/24", "dev", labPublicIf)
		l.wantCheck(Health{Healthy: true, Stale: true})
		l.nat.must("ensure")
		if got := l.nft("list", "table", "ip", TableName); got != wantTable {
			t.Errorf("table without the secondary address:\n%s\nwant:\n%s", got, wantTable)
		}
		l.wantCheck(Health{Healthy: true})
		// Masqueraded rather than source-NATed to an address nobody answers for.
		l.wantSources(labPublicAddr, labPublicAddr)
	}
	{
		t.Log("step: AddressConfiguredAgain")
		run(t, "ip", "-n", l.ns, "addr", "add", snatSecondary+"/24", "dev", labPublicIf)
		l.wantCheck(Health{Healthy: true, Stale: true})
		l.nat.must("ensure")
		if got := l.nft("list", "table", "ip", TableName); got != wantSNATTable {
			t.Errorf("table with the secondary address back:\n%s\nwant:\n%s", got, wantSNATTable)
		}
		l.wantSources(labPublicAddr, snatSecondary)
	}
	{
		t.Log("step: RuleDeleted")
		l.nftScript("flush chain ip natganker postrouting\n" +
			`add rule ip natganker postrouting oifname "pub0" ip saddr 198.18.0.0/16 masquerade`)
		l.wantCheck(Health{Reason: "1 rule in chain postrouting, want 2"})
		l.nat.must("ensure")
		l.wantCheck(Health{Healthy: true})
		l.wantSources(labPublicAddr, snatSecondary)
	}
	{
		t.Log("step: RuleChanged")
		l.nftScript("flush chain ip natganker postrouting\n" +
			`add rule ip natganker postrouting oifname "pub0" ip saddr 198.18.2.0/24 snat to 198.18.0.1` + "\n" +
			`add rule ip natganker postrouting oifname "pub0" ip saddr 198.18.0.0/16 masquerade`)
		l.wantCheck(Health{Reason: `rule 1 differs from oifname "pub0" ip saddr 198.18.2.0/24 snat to 198.18.0.3 (source NAT of group "az-b")`})
		l.nat.must("ensure")
		l.wantCheck(Health{Healthy: true})
	}
	{
		t.Log("step: RulesWithdrawn")
		l.setSNAT()
		l.wantCheck(Health{Healthy: true, Stale: true})
		l.nat.must("ensure")
		if got := l.nft("list", "table", "ip", TableName); got != wantTable {
			t.Errorf("table without source NAT rules:\n%s\nwant:\n%s", got, wantTable)
		}
		l.wantSources(labPublicAddr, labPublicAddr)
	}
}

// TestDatapath_SourceNATUnmanaged: an unmanaged datapath takes rules but only checks that
// some NAT is in place, as before.
func TestDatapath_SourceNATUnmanaged(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	h.newDatapath(Config{PublicInterface: labPublicIf})
	l.setSysctl("net/ipv4/ip_forward", "1")
	l.nftScript(`table inet theirs {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "pub0" masquerade
	}
}
`)
	if r := h.do(helperRequest{Op: "snat", SNAT: []SourceNAT{azB}}); r.Err != "" {
		t.Fatal(r.Err)
	}
	if got, _ := h.check(); got != (Health{Healthy: true}) {
		t.Fatalf("Check = %+v, want healthy and not stale", got)
	}
	if tables := l.nft("list", "tables"); strings.Contains(tables, TableName) {
		t.Errorf("an unmanaged datapath created table ip natganker:\n%s", tables)
	}
}
