// Package datapath sets up and checks the forwarding path of a NAT instance: IPv4 forwarding,
// ICMP redirects off, and a masquerade rule for traffic leaving the public interface.
//
// NAT is programmed through nftables over netlink (no nft or iptables binaries), in a table of
// its own, `ip natganker`, so that repairing or removing it never touches anyone else's rules.
// Everything works on the network namespace of the calling process.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Names of the nftables objects this package owns.
const (
	TableName = "natganker"
	ChainName = "postrouting"
)

// DefaultEgressProbeTimeout bounds one egress probe when Config.EgressProbeTimeout is zero.
const DefaultEgressProbeTimeout = time.Second

// probeInterval is the least time between two egress probes: Check runs every second and
// must stay cheap, so it reuses a result younger than this.
const probeInterval = 3 * time.Second

// maxCheckWait bounds how long Check waits for anything, including the first egress probe.
const maxCheckWait = time.Second

// Config says what the datapath should look like.
type Config struct {
	// Manage makes Ensure set the datapath up and repair it. When false the datapath is
	// someone else's: Check only looks, and accepts any masquerade or SNAT rule found in a
	// postrouting NAT base chain of an ip or inet table (nft or iptables-nft) instead of
	// requiring our own table. Rules of iptables-legacy, or in chains jumped to, are not seen.
	Manage bool
	// PublicInterface is the interface NATed traffic leaves through, e.g. "eth1". Required.
	PublicInterface string
	// MasqueradeSource is the IPv4 CIDR whose traffic is masqueraded, usually the VPC CIDR.
	// Required when Manage is set. "0.0.0.0/0" masquerades every source.
	MasqueradeSource string
	// EgressProbe is an optional "host:port" that Check connects to over TCP, bound to the
	// public interface, to prove that traffic gets out.
	EgressProbe string
	// EgressProbeTimeout bounds one egress probe; zero means DefaultEgressProbeTimeout.
	EgressProbeTimeout time.Duration
}

// Health is the result of Check.
type Health struct {
	// Healthy is true when this node can forward and NAT traffic.
	Healthy bool
	// Reason says, in a few words an operator understands, why the node is not healthy.
	Reason string
	// Stale is set, on a managed datapath, when table ip natganker still holds the rules
	// Ensure installed last but the wanted ones have changed since (SetSourceNAT, or a
	// source NAT address added to or removed from the interface): the node is healthy, and
	// Ensure brings the table up to date.
	Stale bool
}

// Datapath sets up and checks the NAT datapath of the current network namespace.
// Its methods are safe for concurrent use.
type Datapath struct {
	cfg     Config
	source  netip.Prefix
	logger  hclog.Logger
	procSys string // root of the sysctl tree, "/proc/sys"

	probe prober

	mu sync.Mutex
	// snat are the source NAT rules asked for (SetSourceNAT), installed records the rules
	// last found or put in place by Ensure, and missing the source NAT addresses found not
	// configured on the public interface, with their group (snat.go).
	snat      []SourceNAT
	installed []natRule
	missing   map[netip.Addr]string
}

// New validates cfg and returns a Datapath. It changes nothing and starts nothing.
func New(cfg Config, logger hclog.Logger) (*Datapath, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := validInterfaceName(cfg.PublicInterface); err != nil {
		return nil, fmt.Errorf("public_interface: %w", err)
	}
	d := &Datapath{cfg: cfg, logger: logger.Named("datapath"), procSys: "/proc/sys"}
	if cfg.MasqueradeSource != "" || cfg.Manage {
		p, err := parseSource(cfg.MasqueradeSource)
		if err != nil {
			return nil, fmt.Errorf("masquerade_source: %w", err)
		}
		d.source = p
	}
	if cfg.EgressProbeTimeout < 0 {
		return nil, fmt.Errorf("egress_probe_timeout: must not be negative (got %s)", cfg.EgressProbeTimeout)
	}
	if d.cfg.EgressProbeTimeout == 0 {
		d.cfg.EgressProbeTimeout = DefaultEgressProbeTimeout
	}
	if cfg.EgressProbe != "" {
		host, port, err := net.SplitHostPort(cfg.EgressProbe)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("egress_probe: must be host:port (got %q)", cfg.EgressProbe)
		}
	}
	d.probe = prober{
		target:  cfg.EgressProbe,
		iface:   cfg.PublicInterface,
		timeout: d.cfg.EgressProbeTimeout,
		every:   probeInterval,
	}
	return d, nil
}

// validInterfaceName mirrors the kernel's dev_valid_name.
func validInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("required")
	case len(name) > 15:
		return fmt.Errorf("must be at most 15 bytes (got %q)", name)
	case name == "." || name == "..":
		return fmt.Errorf("not an interface name (got %q)", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("must not contain '/', ':' or white space (got %q)", name)
	}
	return nil
}

func parseSource(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("required when the datapath is managed (use 0.0.0.0/0 for every source)")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("must be an IPv4 CIDR like 10.0.0.0/16 (got %q)", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("host bits set in %q (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// Ensure makes the datapath what Config asks for: ip_forward=1, send_redirects=0 on "all"
// and on the public interface, and table `ip natganker` holding one postrouting NAT chain
// with a rule `oifname PUBLIC ip saddr CIDR snat to ADDRESS` per source of each SourceNAT
// whose address is configured on the public interface (snat.go), and last the rule
// `oifname PUBLIC ip saddr SOURCE masquerade`. It changes only what
// differs, so running it again is a no-op; anything else found in our table is replaced in
// one atomic nftables transaction. Ensure does everything it can and reports every failure.
// It returns an error when Manage is false.
func (d *Datapath) Ensure(ctx context.Context) error {
	if !d.cfg.Manage {
		return errors.New("ensure datapath: not managed (set manage = true)")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ensure datapath: %w", err)
	}
	var errs []error
	if err := d.ensureSysctl("net/ipv4/ip_forward", "1"); err != nil {
		errs = append(errs, err)
	}
	if err := d.ensureSysctl("net/ipv4/conf/all/send_redirects", "0"); err != nil {
		errs = append(errs, err)
	}
	if err := d.ensureSysctl("net/ipv4/conf/"+d.cfg.PublicInterface+"/send_redirects", "0"); err != nil {
		errs = append(errs, err)
	}
	if err := d.ensureTable(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ensure datapath: %w", err)
	}
	return nil
}

// Remove deletes table `ip natganker` and everything in it, and nothing else. Removing a
// table that is not there is not an error. Sysctls are left as they are: other software on
// the host may rely on forwarding.
func (d *Datapath) Remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove datapath: %w", err)
	}
	if err := d.removeTable(ctx); err != nil {
		return fmt.Errorf("remove datapath: %w", err)
	}
	return nil
}

// Check reports whether this node can carry NAT traffic: the public interface exists and is
// up, IPv4 forwarding is on, the NAT rules are in place (on a managed datapath, exactly the
// source NAT rules and the masquerade rule Ensure installs), and the egress probe, if
// configured, connects. It is cheap enough to run every second: the egress probe runs in
// the background at most every 3 s and Check reads its latest result. Check returns within
// about a second even on the first call, when it waits for the first probe. A failing
// egress path therefore shows up within about 3 s plus EgressProbeTimeout, and a probe in
// flight outlives Check by at most EgressProbeTimeout.
func (d *Datapath) Check(ctx context.Context) Health {
	ctx, cancel := context.WithTimeout(ctx, maxCheckWait)
	defer cancel()
	// Start the probe first so that it runs while the local checks do.
	d.probe.kick()

	if reason := checkInterface(d.cfg.PublicInterface); reason != "" {
		return Health{Reason: reason}
	}
	fwd, err := d.readSysctl("net/ipv4/ip_forward")
	switch {
	case err != nil:
		return Health{Reason: fmt.Sprintf("cannot read ip_forward: %v", err)}
	case fwd != "1":
		return Health{Reason: "ip_forward is " + fwd}
	}
	reason, stale := d.checkNAT(ctx)
	if reason != "" {
		return Health{Reason: reason}
	}
	if reason := d.probe.result(ctx); reason != "" {
		return Health{Reason: reason}
	}
	return Health{Healthy: true, Stale: stale}
}
