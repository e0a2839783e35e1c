package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
