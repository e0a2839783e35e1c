package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables/expr"
	"github.com/hashicorp/go-hclog"
)

func TestNew_Validation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" for valid
	}{
		{name: "Minimal", cfg: Config{Manage: true, PublicInterface: "eth1", MasqueradeSource: "10.0.0.0/16"}},
		{name: "EveryoneMasqueraded", cfg: Config{Manage: true, PublicInterface: "eth1", MasqueradeSource: "0.0.0.0/0"}},
		{name: "UnmanagedNeedsNoSource", cfg: Config{PublicInterface: "eth1"}},
		{name: "VLANInterface", cfg: Config{PublicInterface: "eth0.100"}},
		{name: "Probe", cfg: Config{PublicInterface: "eth1", EgressProbe: "198.19.0.1:80", EgressProbeTimeout: 2 * time.Second}},
		{name: "NoInterface", cfg: Config{Manage: true, MasqueradeSource: "10.0.0.0/16"},
			wantErr: "public_interface: required"},
		{name: "LongInterface", cfg: Config{PublicInterface: "abcdefghijklmnop"},
			wantErr: `public_interface: must be at most 15 bytes (got "abcdefghijklmnop")`},
		{name: "SlashInInterface", cfg: Config{PublicInterface: "eth/1"},
			wantErr: `public_interface: must not contain '/', ':' or white space (got "eth/1")`},
		{name: "ManagedWithoutSource", cfg: Config{Manage: true, PublicInterface: "eth1"},
			wantErr: "masquerade_source: required when the datapath is managed (use 0.0.0.0/0 for every source)"},
		{name: "SourceNotCIDR", cfg: Config{Manage: true, PublicInterface: "eth1", MasqueradeSource: "10.0.0.1"},
			wantErr: `masquerade_source: must be an IPv4 CIDR like 10.0.0.0/16 (got "10.0.0.1")`},
		{name: "SourceIPv6", cfg: Config{Manage: true, PublicInterface: "eth1", MasqueradeSource: "fd00::/8"},
			wantErr: `masquerade_source: must be an IPv4 CIDR like 10.0.0.0/16 (got "fd00::/8")`},
		{name: "SourceHostBits", cfg: Config{Manage: true, PublicInterface: "eth1", MasqueradeSource: "10.0.1.0/16"},
			wantErr: `masquerade_source: host bits set in "10.0.1.0/16" (did you mean 10.0.0.0/16?)`},
		{name: "ProbeWithoutPort", cfg: Config{PublicInterface: "eth1", EgressProbe: "198.19.0.1"},
			wantErr: `egress_probe: must be host:port (got "198.19.0.1")`},
		{name: "NegativeTimeout", cfg: Config{PublicInterface: "eth1", EgressProbeTimeout: -time.Second},
			wantErr: "egress_probe_timeout: must not be negative (got -1s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if d.cfg.EgressProbeTimeout <= 0 {
					t.Errorf("EgressProbeTimeout = %s, want a default", d.cfg.EgressProbeTimeout)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("New error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestUnmanagedEnsureFails(t *testing.T) {
	d, err := New(Config{PublicInterface: "eth1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ensure(context.Background()); err == nil {
		t.Fatal("Ensure on an unmanaged datapath succeeded")
	}
}

func TestPrefixMask(t *testing.T) {
	for bits, want := range map[int]string{
		1: "80000000", 8: "ff000000", 12: "fff00000", 16: "ffff0000", 23: "fffffe00", 31: "fffffffe",
	} {
		if got := fmt.Sprintf("%x", prefixMask(bits)); got != want {
			t.Errorf("prefixMask(%d) = %s, want %s", bits, got, want)
		}
	}
}

func TestMasqueradeExprs_Shape(t *testing.T) {
	// nft(8) leaves out the address match for /0 and the mask for /32; so do we, so that a
	// rule written by hand the obvious way compares equal.
	tests := []struct {
		source string
		want   int
	}{
		{"0.0.0.0/0", 3},     // meta, cmp, masq
		{"10.0.0.5/32", 5},   // + payload, cmp
		{"198.18.0.0/16", 6}, // + bitwise
	}
	for _, tt := range tests {
		if got := len(masqueradeExprs("eth1", netip.MustParsePrefix(tt.source))); got != tt.want {
			t.Errorf("masqueradeExprs(%s) has %d expressions, want %d", tt.source, got, tt.want)
		}
	}
}

func TestDescribeDialError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"Refused", &net.OpError{Op: "dial", Net: "tcp4", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
			"connection refused"},
		{"Unreachable", &net.OpError{Op: "dial", Net: "tcp4", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)},
			"network is unreachable"},
		{"Timeout", &net.OpError{Op: "dial", Net: "tcp4", Err: context.DeadlineExceeded},
			"no answer within 1s"},
		{"NoDevice", &net.OpError{Op: "dial", Net: "tcp4", Err: fmt.Errorf("bind to eth9: %w", syscall.ENODEV)},
			"bind to interface: no such device"},
		{"Other", errors.New("something odd"), "something odd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describeDialError(tt.err, time.Second); got != tt.want {
				t.Errorf("describeDialError(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestDotted(t *testing.T) {
	for key, want := range map[string]string{
		"net/ipv4/ip_forward":                   "net.ipv4.ip_forward",
		"net/ipv4/conf/eth0.100/send_redirects": "net.ipv4.conf.eth0/100.send_redirects",
	} {
		if got := dotted(key); got != want {
			t.Errorf("dotted(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestSysctl(t *testing.T) {
	d, err := New(Config{Manage: true, PublicInterface: "eth1", MasqueradeSource: "10.0.0.0/8"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.procSys = t.TempDir()
	path := d.procSys + "/net/ipv4"
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"/ip_forward", []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.ensureSysctl("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.readSysctl("net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward = %q, want 1", got)
	}
	err = d.ensureSysctl("net/ipv4/conf/eth1/send_redirects", "0")
	if err == nil || !strings.Contains(err.Error(), "net.ipv4.conf.eth1.send_redirects") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ensureSysctl on a missing interface = %v, want a not-exist error naming the sysctl", err)
	}
}

func TestRuleExprs_SourceNAT(t *testing.T) {
	r := natRule{group: "az-b", source: netip.MustParsePrefix("10.0.2.0/24"), to: netip.MustParseAddr("10.0.0.12")}
	if got, want := r.text("eth0"), `oifname "eth0" ip saddr 10.0.2.0/24 snat to 10.0.0.12`; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
	exprs := ruleExprs("eth0", r)
	// meta, cmp, payload, bitwise, cmp, then the address into register 1 and snat from it.
	if len(exprs) != 7 {
		t.Fatalf("%d expressions, want 7: %#v", len(exprs), exprs)
	}
	imm, ok := exprs[5].(*expr.Immediate)
	if !ok || fmt.Sprintf("%x", imm.Data) != "0a00000c" {
		t.Errorf("expression 6 = %#v, want the address 10.0.0.12 loaded into a register", exprs[5])
	}
	nat, ok := exprs[6].(*expr.NAT)
	if !ok || nat.Type != expr.NATTypeSourceNAT || nat.RegAddrMin != imm.Register {
		t.Errorf("expression 7 = %#v, want snat from register %d", exprs[6], imm.Register)
	}
	if m := (natRule{source: netip.MustParsePrefix("10.0.0.0/16")}); m.text("eth0") != `oifname "eth0" ip saddr 10.0.0.0/16 masquerade` {
		t.Errorf("masquerade text = %q", m.text("eth0"))
	}
}

// TestWantedRules uses the loopback interface, which has 127.0.0.1 everywhere: no root needed.
func TestWantedRules(t *testing.T) {
	var logs bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	d, err := New(Config{Manage: true, PublicInterface: "lo", MasqueradeSource: "10.0.0.0/16"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	masq := natRule{source: netip.MustParsePrefix("10.0.0.0/16")}
	if got := d.wantedRules(); !reflect.DeepEqual(got, []natRule{masq}) {
		t.Fatalf("wantedRules without source NAT = %+v, want the masquerade rule alone", got)
	}

	here, absent := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.99")
	d.SetSourceNAT([]SourceNAT{
		{Group: "az-b", To: here, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24"), netip.MustParsePrefix("10.0.3.7/24")}},
		{Group: "az-c", To: absent, Sources: []netip.Prefix{netip.MustParsePrefix("10.0.4.0/24")}},
		{Group: "no-sources", To: here},
		{Group: "ipv6", To: netip.MustParseAddr("fd00::1"), Sources: []netip.Prefix{netip.MustParsePrefix("10.0.5.0/24")}},
	})
	want := []natRule{
		{group: "az-b", source: netip.MustParsePrefix("10.0.2.0/24"), to: here},
		{group: "az-b", source: netip.MustParsePrefix("10.0.3.0/24"), to: here}, // host bits dropped
		masq,
	}
	for i := 0; i < 3; i++ {
		if got := d.wantedRules(); !reflect.DeepEqual(got, want) {
			t.Fatalf("wantedRules = %+v, want %+v", got, want)
		}
	}
	if n := strings.Count(logs.String(), "source NAT address not configured"); n != 1 {
		t.Errorf("the missing address was logged %d times in three rounds, want once:\n%s", n, logs.String())
	}
	for _, s := range []string{"group=az-c", "address=10.0.0.99", "interface=lo", "configure 10.0.0.99 on lo"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log does not say %q:\n%s", s, logs.String())
		}
	}

	// A group that no longer asks for the address is not announced as come back.
	logs.Reset()
	d.SetSourceNAT(nil)
	d.wantedRules()
	if logs.Len() != 0 {
		t.Errorf("withdrawing the rules logged:\n%s", logs.String())
	}
}
