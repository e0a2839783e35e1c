package datapath

import (
	"strings"
	"testing"
	"time"
)

func managedConfig() Config {
	return Config{Manage: true, PublicInterface: labPublicIf, MasqueradeSource: labSource}
}

// wantTable is `nft list table ip natganker` after Ensure in the lab.
const wantTable = `table ip natganker {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "pub0" ip saddr 198.18.0.0/16 masquerade
	}
}
`

// masqueradeRules counts the rules in table ip natganker as nft(8) sees them.
func (l *lab) masqueradeRules() int {
	l.t.Helper()
	return strings.Count(l.nft("list", "table", "ip", TableName), "masquerade")
}

func TestDatapath_EnsureFresh(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	h.newDatapath(managedConfig())

	if got, _ := h.check(); got.Healthy || got.Reason != "ip_forward is 0" {
		t.Fatalf("Check before Ensure = %+v, want unhealthy with ip_forward is 0", got)
	}
	h.must("ensure")

	for key, want := range map[string]string{
		"net/ipv4/ip_forward":               "1",
		"net/ipv4/conf/all/send_redirects":  "0",
		"net/ipv4/conf/pub0/send_redirects": "0",
	} {
		if got := l.sysctl(key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if got := l.nft("list", "table", "ip", TableName); got != wantTable {
		t.Errorf("nft list table ip natganker:\n%s\nwant:\n%s", got, wantTable)
	}
	if got, _ := h.check(); !got.Healthy {
		t.Fatalf("Check after Ensure = %+v, want healthy", got)
	}
	// Check runs every second on the agent: it must stay cheap.
	var slowest time.Duration
	for i := 0; i < 50; i++ {
		got, elapsed := h.check()
		if !got.Healthy {
			t.Fatalf("Check = %+v, want healthy", got)
		}
		slowest = max(slowest, elapsed)
	}
	t.Logf("slowest of 50 Checks: %s", slowest)
	if slowest > 100*time.Millisecond {
		t.Errorf("slowest of 50 Checks took %s, want well under 100ms", slowest)
	}
}

func TestDatapath_EnsureIsIdempotent(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	h.newDatapath(managedConfig())
	h.must("ensure")
	before := l.nft("-a", "list", "table", "ip", TableName) // -a shows handles: any rewrite changes them
	h.must("ensure")
	h.must("ensure")
	after := l.nft("-a", "list", "table", "ip", TableName)
	if before != after {
		t.Errorf("Ensure changed a correct table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if n := l.masqueradeRules(); n != 1 {
		t.Errorf("%d masquerade rules after three Ensure calls, want 1", n)
	}
}

func TestDatapath_CheckAndRepair(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(l *lab)
		reason  string
	}{
		{
			name:    "RuleDeleted",
			breakIt: func(l *lab) { l.nft("flush", "chain", "ip", TableName, ChainName) },
			reason:  "masquerade rule missing",
		},
		{
			name:    "TableDeleted",
			breakIt: func(l *lab) { l.nft("delete", "table", "ip", TableName) },
			reason:  "masquerade rule missing",
		},
		{
			name:    "ChainDeleted",
			breakIt: func(l *lab) { l.nft("delete", "chain", "ip", TableName, ChainName) },
			reason:  "masquerade rule missing",
		},
		{
			name:    "ExtraRule",
			breakIt: func(l *lab) { l.nftScript(`add rule ip natganker postrouting oifname "pub0" accept`) },
			reason:  "2 rules in chain postrouting, want 1",
		},
		{
			name: "DuplicateRule",
			breakIt: func(l *lab) {
				l.nftScript(`add rule ip natganker postrouting oifname "pub0" ip saddr 198.18.0.0/16 masquerade`)
			},
			reason: "2 rules in chain postrouting, want 1",
		},
		{
			name: "WrongSource",
			breakIt: func(l *lab) {
				l.nftScript("flush chain ip natganker postrouting\n" +
					`add rule ip natganker postrouting oifname "pub0" ip saddr 10.0.0.0/8 masquerade`)
			},
			reason: `masquerade rule differs from oifname "pub0" ip saddr 198.18.0.0/16 masquerade`,
		},
		{
			name: "WrongInterface",
			breakIt: func(l *lab) {
				l.nftScript("flush chain ip natganker postrouting\n" +
					`add rule ip natganker postrouting oifname "eth9" ip saddr 198.18.0.0/16 masquerade`)
			},
			reason: `masquerade rule differs from oifname "pub0" ip saddr 198.18.0.0/16 masquerade`,
		},
		{
			name:    "ExtraChain",
			breakIt: func(l *lab) { l.nft("add", "chain", "ip", TableName, "sneaky") },
			reason:  "unexpected chain sneaky in table ip natganker",
		},
		{
			name:    "PolicyDrop",
			breakIt: func(l *lab) { l.nftScript("chain ip natganker postrouting { policy drop; }") },
			reason:  "chain postrouting policy is not accept",
		},
		{
			name:    "Dormant",
			breakIt: func(l *lab) { l.nftScript("add table ip natganker { flags dormant; }") },
			reason:  "table ip natganker is dormant",
		},
		{
			name:    "ForwardingOff",
			breakIt: func(l *lab) { l.setSysctl("net/ipv4/ip_forward", "0") },
			reason:  "ip_forward is 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLab(t)
			h := startHelper(t, l.ns)
			h.newDatapath(managedConfig())
			h.must("ensure")
			if got, _ := h.check(); !got.Healthy {
				t.Fatalf("Check after Ensure = %+v, want healthy", got)
			}

			tt.breakIt(l)
			if got, _ := h.check(); got.Healthy || got.Reason != tt.reason {
				t.Fatalf("Check after breaking = %+v, want reason %q", got, tt.reason)
			}

			h.must("ensure")
			if got, _ := h.check(); !got.Healthy {
				t.Fatalf("Check after repair = %+v, want healthy", got)
			}
			if got := l.nft("list", "table", "ip", TableName); got != wantTable {
				t.Errorf("table after repair:\n%s\nwant:\n%s", got, wantTable)
			}
			if got := l.sysctl("net/ipv4/ip_forward"); got != "1" {
				t.Errorf("ip_forward after repair = %s, want 1", got)
			}
		})
	}
}

func TestDatapath_Interface(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	h.newDatapath(managedConfig())
	h.must("ensure")
	if got, _ := h.check(); !got.Healthy {
		t.Fatalf("Check after Ensure = %+v, want healthy", got)
	}

	t.Run("AdminDown", func(t *testing.T) {
		run(t, "ip", "-n", l.ns, "link", "set", labPublicIf, "down")
		h.waitHealth("interface pub0 is down", 2*time.Second)
		run(t, "ip", "-n", l.ns, "link", "set", labPublicIf, "up")
		h.waitHealth("", 2*time.Second)
	})
	t.Run("NoCarrier", func(t *testing.T) {
		// Taking the far end of the veth down drops our carrier: oper state lowerlayerdown.
		run(t, "ip", "-n", l.far, "link", "set", "pub0p", "down")
		h.waitHealth("interface pub0 is down (no carrier)", 2*time.Second)
		run(t, "ip", "-n", l.far, "link", "set", "pub0p", "up")
		h.waitHealth("", 2*time.Second)
	})
	t.Run("Missing", func(t *testing.T) {
		other := startHelper(t, l.ns)
		cfg := managedConfig()
		cfg.PublicInterface = "nope0"
		other.newDatapath(cfg)
		if got, _ := other.check(); got.Healthy || got.Reason != "interface nope0 does not exist" {
			t.Fatalf("Check = %+v, want interface nope0 does not exist", got)
		}
		// Ensure still installs NAT (oifname matches by name, so it works once the interface
		// appears) but reports that the interface's sysctl could not be set.
		r := other.do(helperRequest{Op: "ensure"})
		if !strings.Contains(r.Err, "net.ipv4.conf.nope0.send_redirects") {
			t.Errorf("Ensure error = %q, want it to name net.ipv4.conf.nope0.send_redirects", r.Err)
		}
		if listing := l.nft("list", "table", "ip", TableName); !strings.Contains(listing, `oifname "nope0"`) {
			t.Errorf("Ensure did not install the rule for nope0:\n%s", listing)
		}
	})
}

func TestDatapath_EgressProbe(t *testing.T) {
	l := newLab(t)
	far := startHelper(t, l.far)
	target := labFarAddr + ":8080"
	if r := far.do(helperRequest{Op: "listen", Addr: target}); r.Err != "" {
		t.Fatalf("listen %s: %s", target, r.Err)
	}

	h := startHelper(t, l.ns)
	cfg := managedConfig()
	cfg.EgressProbe = target
	h.newDatapath(cfg)
	h.must("ensure")

	// The first Check waits for the first probe; no Check may block for more than ~1 s.
	got, elapsed := h.check()
	if !got.Healthy {
		t.Fatalf("Check with listener up = %+v, want healthy", got)
	}
	if elapsed > 1200*time.Millisecond {
		t.Errorf("first Check took %s, want at most ~1s", elapsed)
	}
	accepted := far.waitAccepted(1)
	if len(accepted) != 1 || !strings.HasPrefix(accepted[0], labPublicAddr+":") {
		t.Errorf("listener saw connections from %v, want one from %s", accepted, labPublicAddr)
	}

	// Checks within the probe interval reuse the result: no new connection, no waiting.
	for i := 0; i < 5; i++ {
		if got, elapsed := h.check(); !got.Healthy || elapsed > 200*time.Millisecond {
			t.Fatalf("cached Check = %+v in %s, want healthy and fast", got, elapsed)
		}
	}
	if n := len(far.do(helperRequest{Op: "accepted"}).Addrs); n != 1 {
		t.Errorf("%d probe connections within the probe interval, want 1", n)
	}

	far.must("close")
	h.waitHealth("egress probe 198.18.0.2:8080: connection refused", 3*probeInterval)
}

func TestDatapath_EgressProbeTimeout(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	cfg := managedConfig()
	cfg.EgressProbe = "198.18.0.99:80" // on the public subnet, but nobody answers ARP
	cfg.EgressProbeTimeout = 300 * time.Millisecond
	h.newDatapath(cfg)
	h.must("ensure")

	got, elapsed := h.check()
	if want := "egress probe 198.18.0.99:80: no answer within 300ms"; got.Reason != want {
		t.Errorf("Check = %+v, want reason %q", got, want)
	}
	if elapsed > time.Second {
		t.Errorf("Check took %s, want at most the probe timeout and a little", elapsed)
	}
	for i := 0; i < 3; i++ {
		if got, elapsed := h.check(); got.Healthy || elapsed > 200*time.Millisecond {
			t.Errorf("cached Check = %+v in %s, want the cached failure, fast", got, elapsed)
		}
	}
}

func TestDatapath_Remove(t *testing.T) {
	l := newLab(t)
	l.nftScript(`table ip other {
	chain postrouting {
		type nat hook postrouting priority srcnat + 10; policy accept;
		oifname "pub0" counter masquerade
	}
}
`)
	other := l.nft("-a", "list", "table", "ip", "other")

	h := startHelper(t, l.ns)
	h.newDatapath(managedConfig())
	h.must("ensure")
	if got, _ := h.check(); !got.Healthy {
		t.Fatalf("Check after Ensure = %+v, want healthy", got)
	}
	h.must("remove")
	if tables := l.nft("list", "tables"); strings.Contains(tables, TableName) {
		t.Errorf("table ip natganker still there after Remove:\n%s", tables)
	}
	if got, _ := h.check(); got.Healthy || got.Reason != "masquerade rule missing" {
		t.Errorf("Check after Remove = %+v, want masquerade rule missing", got)
	}
	h.must("remove") // idempotent
	if got := l.nft("-a", "list", "table", "ip", "other"); got != other {
		t.Errorf("Remove touched table ip other:\nbefore:\n%s\nafter:\n%s", other, got)
	}
	if got := l.sysctl("net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward after Remove = %s, want it left at 1", got)
	}
}

func TestDatapath_Unmanaged(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	h.newDatapath(Config{PublicInterface: labPublicIf})
	if r := h.do(helperRequest{Op: "ensure"}); r.Err == "" {
		t.Error("Ensure on an unmanaged datapath succeeded, want an error")
	}
	if got := l.sysctl("net/ipv4/ip_forward"); got != "0" {
		t.Fatalf("unmanaged Ensure changed ip_forward to %s", got)
	}
	l.setSysctl("net/ipv4/ip_forward", "1")
	if got, _ := h.check(); got.Reason != "masquerade rule missing" {
		t.Fatalf("Check without any NAT = %+v, want masquerade rule missing", got)
	}
	// NAT set up by someone else, in a table and inet family of their choosing.
	l.nftScript(`table inet theirs {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "pub0" masquerade
	}
}
`)
	if got, _ := h.check(); !got.Healthy {
		t.Fatalf("Check with their masquerade rule = %+v, want healthy", got)
	}
}

// TestDatapath_Traffic sends real traffic through the NAT namespace: a client on a private
// subnet connects to a server in the far namespace, which has no route back to the client's
// subnet, so the connection only works when Ensure has turned on forwarding and masquerade,
// and the server must see the NAT's public address as the source.
func TestDatapath_Traffic(t *testing.T) {
	l := newLab(t)
	client := newNamespace(t, "ngdp-cli-")
	run(t, "ip", "-n", l.ns, "link", "add", "priv0", "type", "veth", "peer", "name", "eth0", "netns", client)
	run(t, "ip", "-n", l.ns, "addr", "add", "198.18.1.1/24", "dev", "priv0")
	run(t, "ip", "-n", l.ns, "link", "set", "priv0", "up")
	run(t, "ip", "-n", client, "addr", "add", "198.18.1.2/24", "dev", "eth0")
	run(t, "ip", "-n", client, "link", "set", "eth0", "up")
	run(t, "ip", "-n", client, "route", "add", "default", "via", "198.18.1.1")

	far := startHelper(t, l.far)
	target := labFarAddr + ":9000"
	if r := far.do(helperRequest{Op: "listen", Addr: target}); r.Err != "" {
		t.Fatalf("listen %s: %s", target, r.Err)
	}
	cli := startHelper(t, client)
	if r := cli.do(helperRequest{Op: "dial", Addr: target}); r.Err == "" {
		t.Fatalf("client reached %s before Ensure (from %v): the lab does not need NAT", target, r.Addrs)
	}

	h := startHelper(t, l.ns)
	h.newDatapath(Config{Manage: true, PublicInterface: labPublicIf, MasqueradeSource: "198.18.1.0/24"})
	h.must("ensure")
	r := cli.do(helperRequest{Op: "dial", Addr: target})
	if r.Err != "" {
		t.Fatalf("client cannot reach %s after Ensure: %s", target, r.Err)
	}
	accepted := far.waitAccepted(1)
	if len(accepted) != 1 || !strings.HasPrefix(accepted[0], labPublicAddr+":") {
		t.Errorf("server saw %v, want one connection from the public address %s (client dialled from %v)",
			accepted, labPublicAddr, r.Addrs)
	}
}
