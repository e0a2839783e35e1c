package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/natganker/natganker/ec2"
)

var (
	groupNameRe   = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,32}$`)
	routeTableRe  = regexp.MustCompile(`^rtb-[0-9a-f]+$`)
	allocationRe  = regexp.MustCompile(`^eipalloc-[0-9a-f]+$`)
	hostnameLabel = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path less the NUL).
const maxSocketPath = 107

// Validate checks every setting and returns all problems at once, joined with
// errors.Join, one line each, in file order. Each line names the setting and the bad value,
// and starts with the file position when the Config came from Parse or Load. After 20
// lines one more says how many problems were left out.
func (c *Config) Validate() error {
	v := &checker{c: c}
	v.node()
	v.gossip()
	v.groups()
	v.ec2()
	v.control()
	v.log()
	v.datapath()
	v.telemetry()
	v.hooks()
	v.handoff()
	v.conntrackSync()
	return v.problems.err()
}

// field names one setting: key finds its position in Config.ranges, path is shown to users.
type field struct{ key, path string }

func at(section, attr string) field {
	return field{key: section + "." + attr, path: section + "." + attr}
}

func groupField(i int, g *Group, attr string) field {
	return field{
		key:  fmt.Sprintf("group[%d].%s", i, attr),
		path: fmt.Sprintf("group %q.%s", g.Name, attr),
	}
}

type checker struct {
	c        *Config
	problems problems
}

// fail records a problem. The position is the setting's when it was written, else the
// enclosing block's.
func (v *checker) fail(f field, format string, args ...any) {
	var subject *hcl.Range
	for key := f.key; ; {
		if r, ok := v.c.ranges[key]; ok {
			subject = &r
			break
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	v.problems.add(subject, "%s: %s", f.path, fmt.Sprintf(format, args...))
}

func (v *checker) atLeast(f field, d, lo time.Duration) {
	if d < lo {
		v.fail(f, "must be at least %s (got %s)", lo, d)
	}
}

func (v *checker) between(f field, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(f, "must be between %d and %d (got %d)", lo, hi, n)
	}
}

func (v *checker) oneOf(f field, s string, options ...string) {
	if slices.Contains(options, s) {
		return
	}
	quoted := make([]string, len(options))
	for i, o := range options {
		quoted[i] = strconv.Quote(o)
	}
	v.fail(f, "must be one of %s (got %q)", strings.Join(quoted, ", "), s)
}

// ipv4Prefix checks an IPv4 CIDR written as its network address, as EC2 requires, and
// reports whether it is one.
func (v *checker) ipv4Prefix(f field, s string) bool {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		v.fail(f, "must be an IPv4 CIDR such as 10.0.0.0/16 (got %q)", s)
		return false
	}
	if p.Masked() != p {
		v.fail(f, "must be a network address: host bits are set (got %q, did you mean %q?)", s, p.Masked().String())
		return false
	}
	return true
}

func (v *checker) httpURL(f field, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.fail(f, "must be an http:// or https:// URL (got %q)", s)
	}
}

func (v *checker) node() {
	n := &v.c.Node
	for _, f := range []struct{ name, value string }{
		{"instance_id", n.InstanceID}, {"region", n.Region}, {"availability_zone", n.AvailabilityZone},
		{"local_ipv4", n.LocalIPv4}, {"mac", n.MAC},
	} {
		if f.value == "" {
			continue
		}
		if err := ec2.CheckIdentityField(f.name, f.value); err != nil {
			v.fail(at("node", f.name), "%v (got %q)", err, f.value)
		}
	}
	if n.VPCCIDR != "" {
		v.ipv4Prefix(at("node", "vpc_cidr"), n.VPCCIDR)
	}
	if n.IMDSEndpoint != "" {
		v.httpURL(at("node", "imds_endpoint"), n.IMDSEndpoint)
	}
}

func (v *checker) gossip() {
	g := &v.c.Gossip
	bind := at("gossip", "bind")
	if ip := net.ParseIP(g.BindAddr); ip == nil {
		v.fail(bind, "must be an IP address (got %q)", g.BindAddr)
	}
	v.between(bind, g.BindPort, 1, 65535)
	adv := at("gossip", "advertise")
	if g.AdvertiseAddr != "" {
		if ip := net.ParseIP(g.AdvertiseAddr); ip == nil || ip.IsUnspecified() {
			v.fail(adv, "must be an IP address peers can reach (got %q)", g.AdvertiseAddr)
		}
	}
	v.between(adv, g.AdvertisePort, 1, 65535)

	seen := make(map[string]int)
	for i, p := range g.Peers {
		f := field{key: "gossip.peers", path: fmt.Sprintf("gossip.peers[%d]", i)}
		if !validPeer(p) {
			v.fail(f, "must be host or host:port with a port of 1..65535 (got %q)", p)
			continue
		}
		if j, dup := seen[p]; dup {
			v.fail(f, "duplicate of gossip.peers[%d] (got %q)", j, p)
			continue
		}
		seen[p] = i
	}

	switch {
	case g.InsecurePlaintext && (len(g.EncryptKey) > 0 || g.EncryptKeyFile != ""):
		v.fail(at("gossip", "insecure_plaintext"), "must not be true when a gossip key is set (got true)")
	case g.InsecurePlaintext:
	case len(g.EncryptKey) == 0 && g.EncryptKeyFile == "":
		v.fail(at("gossip", "encrypt_key"),
			"required unless insecure_plaintext = true: set encrypt_key or encrypt_key_file (generate one with `natganker-agent keygen`)")
	case len(g.EncryptKey) > 0 && !slices.Contains([]int{16, 24, 32}, len(g.EncryptKey)):
		// The key itself is a secret: report its length only.
		f := at("gossip", "encrypt_key")
		if g.EncryptKeyFile != "" {
			f = at("gossip", "encrypt_key_file")
		}
		v.fail(f, "key must decode to 16, 24 or 32 bytes (got %d bytes)", len(g.EncryptKey))
	}

	if _, ok := profiles[g.Profile]; !ok {
		v.fail(at("gossip", "profile"), `must be one of "fast", "lan" (got %q)`, g.Profile)
	}
	v.atLeast(at("gossip", "probe_interval"), g.ProbeInterval, 50*time.Millisecond)
	v.atLeast(at("gossip", "probe_timeout"), g.ProbeTimeout, 10*time.Millisecond)
	if g.ProbeTimeout >= g.ProbeInterval && g.ProbeInterval > 0 {
		v.fail(at("gossip", "probe_timeout"), "must be less than probe_interval %s (got %s)", g.ProbeInterval, g.ProbeTimeout)
	}
	v.between(at("gossip", "suspicion_mult"), g.SuspicionMult, 1, 100)
	v.atLeast(at("gossip", "gossip_interval"), g.GossipInterval, 10*time.Millisecond)
	v.atLeast(at("gossip", "rejoin_interval"), g.RejoinInterval, time.Second)
	v.between(at("gossip", "confirm_probes"), g.ConfirmProbes, 1, 20)
	v.atLeast(at("gossip", "confirm_timeout"), g.ConfirmTimeout, 10*time.Millisecond)
	if g.HeartbeatInterval != 0 && g.HeartbeatInterval < 10*time.Millisecond {
		v.fail(at("gossip", "heartbeat_interval"), `must be "0s" (off) or at least 10ms (got %s)`, g.HeartbeatInterval)
	}
}

// validPeer reports whether p is a normalized peer address: host:port, where host is an
// IP address or a DNS name.
func validPeer(p string) bool {
	host, portStr, err := net.SplitHostPort(p)
	if err != nil {
		return false
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if !hostnameLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// maxGroups bounds the groups of one agent, each with an Elastic IP of its own. The rules
// between groups compare every pair of them.
const maxGroups = 64

func (v *checker) groups() {
	c := v.c
	if len(c.Groups) == 0 {
		v.problems.add(nil, `group: at least one group block is required, e.g. group "egress" { priority = 100  elastic_ip = "eipalloc-…" }`)
		return
	}
	gs := groupChecks{names: make(map[string]int), eips: make(map[string]int)}
	for i := range c.Groups {
		v.group(i, &gs)
	}
	if len(c.Groups) > maxGroups {
		v.fail(field{key: fmt.Sprintf("group[%d]", maxGroups), path: fmt.Sprintf("group %q", c.Groups[maxGroups].Name)},
			"too many groups: at most %d may be configured (got %d)", maxGroups, len(c.Groups))
		return
	}
	v.sharedRouteTables(&gs)
	v.sharedTags(&gs)
	v.sharedDiscovery()
}

// groupChecks carries what the checks of one group learn for the checks between groups.
type groupChecks struct {
	names map[string]int // group name → first group of that name
	eips  map[string]int // Elastic IP → first group using it
	// rtbs and dests are each group's well-formed route tables and destinations, without
	// repeats, in the order written; destSets holds the same destinations.
	rtbs, dests [][]string
	destSets    []map[string]bool
	// common caches commonDestination by pair of groups.
	common map[[2]int]string
}

// group checks the settings of group i on their own.
func (v *checker) group(i int, gs *groupChecks) {
	c := v.c
	g := &c.Groups[i]
	f := func(attr string) field { return groupField(i, g, attr) }

	if !groupNameRe.MatchString(g.Name) {
		v.fail(f("name"), "must match %s (got %q)", groupNameRe, g.Name)
	} else if j, dup := gs.names[g.Name]; dup {
		v.fail(field{key: fmt.Sprintf("group[%d]", i), path: fmt.Sprintf("group %q", g.Name)},
			"duplicate group name: group %d and group %d are both named %q", j+1, i+1, g.Name)
	} else {
		gs.names[g.Name] = i
	}

	if _, written := c.ranges[f("priority").key]; g.Priority == 0 && !written {
		v.fail(f("priority"), "required: set a priority between 1 and 1000, higher wins")
	} else {
		v.between(f("priority"), g.Priority, 1, 1000)
	}

	switch {
	case g.ElasticIP == "":
		v.fail(f("elastic_ip"), `required: set an allocation id ("eipalloc-…") or a public IPv4 address`)
	case !validElasticIP(g.ElasticIP):
		v.fail(f("elastic_ip"), "must be an allocation id (eipalloc-…) or a public IPv4 address (got %q)", g.ElasticIP)
	default:
		if j, dup := gs.eips[g.ElasticIP]; dup {
			v.fail(f("elastic_ip"), "already used by group %q (got %q)", c.Groups[j].Name, g.ElasticIP)
		} else {
			gs.eips[g.ElasticIP] = i
		}
	}

	var rtbs []string
	seen := make(map[string]bool)
	for _, rtb := range g.RouteTables {
		switch {
		case !routeTableRe.MatchString(rtb):
			v.fail(f("route_tables"), "must look like rtb-0123456789abcdef0 (got %q)", rtb)
		case seen[rtb]:
			v.fail(f("route_tables"), "listed twice (got %q)", rtb)
		default:
			rtbs = append(rtbs, rtb)
		}
		seen[rtb] = true
	}
	gs.rtbs = append(gs.rtbs, rtbs)
	for _, k := range slices.Sorted(maps.Keys(g.RouteTableTags)) {
		if k == "" || len(k) > 128 {
			v.fail(f("route_table_tags"), "tag keys must be 1 to 128 characters (got %q)", k)
		}
	}
	if len(g.RouteTables) == 0 && len(g.RouteTableTags) == 0 && !g.DiscoverRouteTables {
		if _, written := c.ranges[f("discover_route_tables").key]; len(c.Groups) > 1 && !written {
			v.fail(f("route_tables"),
				"no route table would be managed: set route_tables or route_table_tags (with several groups, discover_route_tables is false unless set)")
		} else {
			v.fail(f("discover_route_tables"),
				"no route table would be managed: set route_tables, route_table_tags or discover_route_tables = true (got false)")
		}
	}

	if len(g.Destinations) == 0 {
		v.fail(f("destinations"), `must list at least one CIDR, e.g. ["0.0.0.0/0"] (got [])`)
	}
	var dests []string
	destSet := make(map[string]bool)
	for _, d := range g.Destinations {
		if !v.ipv4Prefix(f("destinations"), d) {
			continue
		}
		if destSet[d] {
			v.fail(f("destinations"), "listed twice (got %q)", d)
			continue
		}
		destSet[d] = true
		dests = append(dests, d)
	}
	gs.dests = append(gs.dests, dests)
	gs.destSets = append(gs.destSets, destSet)

	v.oneOf(f("target"), g.Target, TargetInstance, TargetENI)
	v.oneOf(f("failback"), g.Failback, FailbackAuto, FailbackManual)
	v.atLeast(f("failback_delay"), g.FailbackDelay, time.Second)
}

// commonDestination returns the first destination of group i that group j routes too, or
// "" when they route none in common. Two groups may share a route table only for
// different destinations: both would otherwise point the same route at their own owner,
// back and forth.
func (gs *groupChecks) commonDestination(i, j int) string {
	if gs.common == nil {
		gs.common = make(map[[2]int]string)
	}
	if d, ok := gs.common[[2]int{i, j}]; ok {
		return d
	}
	d := ""
	for _, dest := range gs.dests[i] {
		if gs.destSets[j][dest] {
			d = dest
			break
		}
	}
	gs.common[[2]int{i, j}] = d
	return d
}

// sharedRouteTables reports a route table that two groups list for the same destination.
func (v *checker) sharedRouteTables(gs *groupChecks) {
	owners := make(map[string][]int) // route table → the groups listing it
	for i, rtbs := range gs.rtbs {
		g := &v.c.Groups[i]
		for _, rtb := range rtbs {
			for _, j := range owners[rtb] {
				if d := gs.commonDestination(i, j); d != "" {
					v.fail(groupField(i, g, "route_tables"), "route %s in %s is already managed by group %q (got %q)",
						d, rtb, v.c.Groups[j].Name, rtb)
					break
				}
			}
			owners[rtb] = append(owners[rtb], i)
		}
	}
}

// sharedTags reports two groups that select the same route tables by tag for the same
// destination: when one group's tags include all of the other's, every table the first
// selects, the second selects too.
func (v *checker) sharedTags(gs *groupChecks) {
	c := v.c
	for i := range c.Groups {
		g := &c.Groups[i]
		if len(g.RouteTableTags) == 0 {
			continue
		}
		for j := range i {
			other := c.Groups[j].RouteTableTags
			if len(other) == 0 {
				continue
			}
			d := gs.commonDestination(i, j)
			if d == "" {
				continue
			}
			var how string
			switch {
			case maps.Equal(g.RouteTableTags, other):
				how = fmt.Sprintf("same tags as group %q", c.Groups[j].Name)
			case hasAllTags(g.RouteTableTags, other):
				how = fmt.Sprintf("every route table with these tags also has the tags of group %q %s", c.Groups[j].Name, formatTags(other))
			case hasAllTags(other, g.RouteTableTags):
				how = fmt.Sprintf("every route table with the tags of group %q %s also has these", c.Groups[j].Name, formatTags(other))
			default:
				continue
			}
			v.fail(groupField(i, g, "route_table_tags"),
				"%s: both groups would manage the route for %s in the same tables; give each group tags that only its own tables carry (got %s)",
				how, d, formatTags(g.RouteTableTags))
			break
		}
	}
}

// hasAllTags reports whether tags include every key and value of want.
func hasAllTags(tags, want map[string]string) bool {
	for k, v := range want {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// formatTags renders tags as they are written in the file, keys sorted.
func formatTags(tags map[string]string) string {
	parts := make([]string, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		parts = append(parts, fmt.Sprintf("%q = %q", k, tags[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// sharedDiscovery reports a second group that discovers route tables. Discovery takes
// every table whose route points at a cluster member, so two discovering groups would
// take each other's tables and flip them forever.
func (v *checker) sharedDiscovery() {
	first := -1
	for i := range v.c.Groups {
		g := &v.c.Groups[i]
		if !g.DiscoverRouteTables {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		v.fail(groupField(i, g, "discover_route_tables"),
			"only one group may discover route tables (group %q does too): name the tables with route_tables or tag them with route_table_tags",
			v.c.Groups[first].Name)
	}
}

// validElasticIP accepts an allocation id or a public (not private, loopback, link-local,
// multicast or unspecified) IPv4 address.
func validElasticIP(s string) bool {
	if allocationRe.MatchString(s) {
		return true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return false
	}
	return !(a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

func (v *checker) ec2() {
	e := &v.c.EC2
	if e.Region != "" {
		if err := ec2.CheckIdentityField("region", e.Region); err != nil {
			v.fail(at("ec2", "region"), "%v (got %q)", err, e.Region)
		}
	}
	if e.Endpoint != "" {
		v.httpURL(at("ec2", "endpoint"), e.Endpoint)
	}
	v.between(at("ec2", "max_concurrency"), e.MaxConcurrency, 1, 64)
	v.atLeast(at("ec2", "call_timeout"), e.CallTimeout, 100*time.Millisecond)
	v.atLeast(at("ec2", "reconcile_interval"), e.ReconcileInterval, time.Second)
}

func (v *checker) control() {
	s := v.c.Control.Socket
	switch {
	case s == "":
		v.fail(at("control", "socket"), `must be a path such as "/run/natganker/agent.sock" (got "")`)
	case len(s) > maxSocketPath:
		v.fail(at("control", "socket"), "must be at most %d bytes long, a limit of unix sockets (got %q)", maxSocketPath, s)
	}
	if f := v.c.Control.StateFile; f != "" && !filepath.IsAbs(f) {
		v.fail(at("control", "state_file"), `must be an absolute path, or "" to keep no state (got %q)`, f)
	}
}

func (v *checker) log() {
	v.oneOf(at("log", "level"), v.c.Log.Level, "trace", "debug", "info", "warn", "error")
	v.oneOf(at("log", "format"), v.c.Log.Format, "auto", "text", "json")
}

func (v *checker) datapath() {
	p := &v.c.Datapath
	if p.Manage && p.PublicInterface == "" {
		v.fail(at("datapath", "public_interface"), `required when manage = true, e.g. "eth0" (got "")`)
	}
	if p.PublicInterface != "" && !validInterfaceName(p.PublicInterface) {
		v.fail(at("datapath", "public_interface"), "must be a network interface name of at most 15 characters (got %q)", p.PublicInterface)
	}
	if p.MasqueradeSource != "" {
		v.ipv4Prefix(at("datapath", "masquerade_source"), p.MasqueradeSource)
	}
	v.atLeast(at("datapath", "check_interval"), p.CheckInterval, 100*time.Millisecond)
	if p.EgressProbe != "" {
		if !validPeer(p.EgressProbe) {
			v.fail(at("datapath", "egress_probe"), "must be host:port (got %q)", p.EgressProbe)
		}
	}
	v.atLeast(at("datapath", "egress_probe_timeout"), p.EgressProbeTimeout, 10*time.Millisecond)
}

// validInterfaceName follows the kernel's dev_valid_name.
func validInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n")
}
