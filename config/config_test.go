package config

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration.
const minimal = `
gossip {
  insecure_plaintext = true
}
group "egress" {
  priority   = 100
  elastic_ip = "eipalloc-0123456789abcdef0"
}
`

// withTables adds route_tables to the first group of src, which starts like minimal: a
// file with several groups needs them, discovery being off by default.
func withTables(src string, rtbs ...string) string {
	return strings.Replace(src, "priority   = 100", `priority   = 100
  route_tables = ["`+strings.Join(rtbs, `", "`)+`"]`, 1)
}

// key32 is a syntactically valid 32-byte key for tests.
var key32 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("agent.hcl", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// parseErr parses src, which must fail, and returns the error's lines.
func parseErr(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse("agent.hcl", []byte(src))
	if err == nil {
		t.Fatalf("Parse succeeded, want an error; input:\n%s", src)
	}
	return strings.Split(err.Error(), "\n")
}

// hasLine reports whether one of lines contains want.
func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if strings.Contains(l, want) {
			return true
		}
	}
	return false
}

func TestParse_Example(t *testing.T) {
	src, err := os.ReadFile("../examples/agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("agent.hcl", src)
	if err != nil {
		t.Fatalf("examples/agent.hcl does not parse:\n%v", err)
	}
	g, ok := c.Group("egress")
	if !ok {
		t.Fatalf("group egress missing; groups: %+v", c.Groups)
	}
	want := Group{
		Name:                "egress",
		Priority:            100,
		ElasticIP:           "eipalloc-0123456789abcdef0",
		RouteTables:         []string{"rtb-0a1b2c3d4e5f60718", "rtb-0f1e2d3c4b5a69788"},
		RouteTableTags:      map[string]string{"natganker:group": "egress"},
		DiscoverRouteTables: true,
		Destinations:        []string{"0.0.0.0/0"},
		Target:              TargetInstance,
		Failback:            FailbackAuto,
		FailbackDelay:       30 * time.Second,
	}
	if !reflect.DeepEqual(*g, want) {
		t.Errorf("group egress:\n got %+v\nwant %+v", *g, want)
	}
	if got, want := c.Gossip.Peers, []string{"198.18.1.11:7946", "198.18.2.11:7946"}; !reflect.DeepEqual(got, want) {
		t.Errorf("peers = %q, want %q", got, want)
	}
	// Parse reads no key file: the example's key stays on disk until Load.
	if c.Gossip.EncryptKeyFile != "/etc/natganker/gossip.key" || c.Gossip.EncryptKey != nil {
		t.Errorf("key file %q, key %v; want the path and no key", c.Gossip.EncryptKeyFile, c.Gossip.EncryptKey)
	}
	if !c.Datapath.Manage || c.Datapath.PublicInterface != "eth0" {
		t.Errorf("datapath = %+v, want manage on eth0", c.Datapath)
	}
}

func TestLoad(t *testing.T) {
	example, err := os.ReadFile("../examples/agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// The example names an absolute key path; point it at a key file next to the copy.
	src := strings.Replace(string(example), `"/etc/natganker/gossip.key"`, `"gossip.key"`, 1)
	if src == string(example) {
		t.Fatal("example no longer names /etc/natganker/gossip.key")
	}

	t.Run("RelativeKeyFile", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "agent.hcl")
		writeFile(t, path, src)
		writeFile(t, filepath.Join(dir, "gossip.key"), key32+"\n")
		c, err := Load(path)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if string(c.Gossip.EncryptKey) != "0123456789abcdef0123456789abcdef" {
			t.Errorf("key = %q", c.Gossip.EncryptKey)
		}
		if want := filepath.Join(dir, "gossip.key"); c.Gossip.EncryptKeyFile != want {
			t.Errorf("key file = %q, want %q", c.Gossip.EncryptKeyFile, want)
		}
	})
	t.Run("MissingKeyFile", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "agent.hcl")
		writeFile(t, path, src)
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), "gossip.encrypt_key_file: read key file:") ||
			!strings.Contains(err.Error(), path+":") {
			t.Fatalf("err = %v, want a position in %s and gossip.encrypt_key_file", err, path)
		}
	})
	t.Run("ShortKeyInFile", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "agent.hcl")
		writeFile(t, path, src)
		writeFile(t, filepath.Join(dir, "gossip.key"), base64.StdEncoding.EncodeToString([]byte("short"))+"\n")
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), "gossip.encrypt_key_file: key file ") ||
			!strings.Contains(err.Error(), "gossip.key line 1: key must decode to 16, 24 or 32 bytes (got 5 bytes)") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("MissingConfig", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.hcl"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDefault(t *testing.T) {
	c := mustParse(t, minimal)

	d := Default()
	d.Gossip.InsecurePlaintext = true
	g := DefaultGroup("egress")
	g.Priority = 100
	g.ElasticIP = "eipalloc-0123456789abcdef0"
	d.Groups = []Group{g}
	d.ranges = c.ranges
	if !reflect.DeepEqual(c, d) {
		t.Errorf("minimal config differs from the defaults:\n got %+v\nwant %+v", c, d)
	}

	// Spot-check the defaults an operator reads about in the documentation.
	checks := []struct {
		name      string
		got, want any
	}{
		{"bind", c.Gossip.BindAddr + ":" + strconv.Itoa(c.Gossip.BindPort), "0.0.0.0:7946"},
		{"advertise port", c.Gossip.AdvertisePort, 7946},
		{"profile", c.Gossip.Profile, "fast"},
		{"probe_interval", c.Gossip.ProbeInterval, 200 * time.Millisecond},
		{"probe_timeout", c.Gossip.ProbeTimeout, 100 * time.Millisecond},
		{"suspicion_mult", c.Gossip.SuspicionMult, 3},
		{"gossip_interval", c.Gossip.GossipInterval, 100 * time.Millisecond},
		{"rejoin_interval", c.Gossip.RejoinInterval, 5 * time.Second},
		{"confirm_probes", c.Gossip.ConfirmProbes, 10},
		{"confirm_timeout", c.Gossip.ConfirmTimeout, 150 * time.Millisecond},
		{"heartbeat_interval", c.Gossip.HeartbeatInterval, 50 * time.Millisecond},
		{"discover_route_tables", c.Groups[0].DiscoverRouteTables, true},
		{"destinations", c.Groups[0].Destinations, []string{"0.0.0.0/0"}},
		{"target", c.Groups[0].Target, "instance"},
		{"failback", c.Groups[0].Failback, "auto"},
		{"failback_delay", c.Groups[0].FailbackDelay, 30 * time.Second},
		{"max_concurrency", c.EC2.MaxConcurrency, 64},
		{"call_timeout", c.EC2.CallTimeout, 5 * time.Second},
		{"reconcile_interval", c.EC2.ReconcileInterval, 10 * time.Second},
		{"socket", c.Control.Socket, "/run/natganker/agent.sock"},
		{"log", c.Log, Log{Level: "info", Format: "auto"}},
		{"manage", c.Datapath.Manage, false},
		{"check_interval", c.Datapath.CheckInterval, time.Second},
		{"egress_probe_timeout", c.Datapath.EgressProbeTimeout, time.Second},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// Default alone lacks a group and a key.
	err := Default().Validate()
	if err == nil {
		t.Fatal("Default().Validate() = nil, want missing group and key")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !hasLine(lines, "group: at least one group block is required") ||
		!hasLine(lines, "gossip.encrypt_key: required unless insecure_plaintext = true") {
		t.Errorf("Default().Validate() = %q", lines)
	}
}

func TestParse_Profile(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		gossip string
		want   [5]any // probe_interval, probe_timeout, suspicion_mult, gossip_interval, heartbeat_interval
	}{
		{"DefaultIsFast", ``, [5]any{200 * ms, 100 * ms, 3, 100 * ms, 50 * ms}},
		{"Fast", `profile = "fast"`, [5]any{200 * ms, 100 * ms, 3, 100 * ms, 50 * ms}},
		{"LAN", `profile = "lan"`, [5]any{time.Second, 500 * ms, 4, 200 * ms, 500 * ms}},
		{"LANWithExplicitProbeInterval", "profile = \"lan\"\nprobe_interval = \"2s\"",
			[5]any{2 * time.Second, 500 * ms, 4, 200 * ms, 500 * ms}},
		{"FastWithExplicitEverything",
			"probe_interval = \"300ms\"\nprobe_timeout = \"150ms\"\nsuspicion_mult = 5\ngossip_interval = \"50ms\"\nheartbeat_interval = \"0s\"",
			[5]any{300 * ms, 150 * ms, 5, 50 * ms, time.Duration(0)}},
		{"ExplicitBeforeProfile", "suspicion_mult = 2\nprofile = \"lan\"",
			[5]any{time.Second, 500 * ms, 2, 200 * ms, 500 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, strings.Replace(minimal, "insecure_plaintext = true", "insecure_plaintext = true\n"+tc.gossip, 1))
			g := c.Gossip
			got := [5]any{g.ProbeInterval, g.ProbeTimeout, g.SuspicionMult, g.GossipInterval, g.HeartbeatInterval}
			if got != tc.want {
				t.Errorf("timings = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParse_Unknown(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{
			name: "Attribute",
			src:  "gossip {\n  insecure_plaintext = true\n  probe_intervall = \"1s\"\n}\n" + minimal[strings.Index(minimal, "group"):],
			want: `agent.hcl:3,3-18: gossip: unknown attribute "probe_intervall" (did you mean "probe_interval"?)`,
		},
		{
			name: "TopLevelAttribute",
			src:  minimal + "\nverbose = true\n",
			want: `agent.hcl:10,1-8: unknown attribute "verbose" (no attributes are expected here)`,
		},
		{
			name: "Block",
			src:  minimal + "\nmetrics {\n  port = 9100\n}\n",
			want: `agent.hcl:10,1-8: unknown block "metrics" (expected one of "node", "gossip", "group", "ec2", "control", "log", "datapath", "telemetry", "hooks", "handoff", "conntrack_sync")`,
		},
		{
			name: "AttributeInGroup",
			src:  strings.Replace(minimal, `priority   = 100`, "priority = 100\n  weight = 3", 1),
			want: `agent.hcl:7,3-9: group "egress": unknown attribute "weight" (expected one of "destinations", "discover_route_tables",`,
		},
		{
			name: "BlockInGroup",
			src:  strings.Replace(minimal, `priority   = 100`, "priority = 100\n  route {\n  }", 1),
			want: `agent.hcl:7,3-8: group "egress": unknown block "route" (no blocks are expected here)`,
		},
		{
			name: "DuplicateBlock",
			src:  minimal + "log {\n}\nlog {\n}\n",
			want: `agent.hcl:11,1-4: Duplicate log block; A log block may appear only once; the first one is at agent.hcl:9,1-4.`,
		},
		{
			name: "GroupWithoutName",
			src:  minimal + "group {\n}\n",
			want: `agent.hcl:9,7-8: Missing name for group; All group blocks must have 1 labels (name).`,
		},
		{
			name: "SyntaxError",
			src:  "gossip {\n  bind = \n}\n",
			want: `agent.hcl:2,10-3,1: Invalid expression; Expected the start of an expression`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines := parseErr(t, tc.src)
			if !hasLine(lines, tc.want) {
				t.Errorf("error lines:\n%s\nwant one containing:\n%s", strings.Join(lines, "\n"), tc.want)
			}
		})
	}
}

// TestParse_BadValue checks that each bad value is reported with its position, the
// setting's path and the value itself.
func TestParse_BadValue(t *testing.T) {
	// Line 1 is "gossip {", so the first attribute set by a case is on line 3.
	const gossipHead = "gossip {\n  insecure_plaintext = true\n"
	group := func(attrs string) string {
		return gossipHead + "}\ngroup \"egress\" {\n  priority = 100\n  elastic_ip = \"eipalloc-0123\"\n" + attrs + "\n}\n"
	}
	gossip := func(attrs string) string {
		return gossipHead + attrs + "\n}\ngroup \"egress\" {\n  priority = 100\n  elastic_ip = \"eipalloc-0123\"\n}\n"
	}
	block := func(name, attrs string) string {
		return minimal + name + " {\n" + attrs + "\n}\n" // the attribute is on line 10
	}
	tests := []struct {
		name string
		src  string
		want string
	}{
		// group: the attribute given by a case is on line 7.
		{"FailbackDelayZero", group(`  failback_delay = "0s"`), `agent.hcl:7,20-24: group "egress".failback_delay: must be at least 1s (got 0s)`},
		{"FailbackDelayNotDuration", group(`  failback_delay = "30"`), `agent.hcl:7,20-24: group "egress".failback_delay: must be a duration such as "500ms" or "30s" (got "30")`},
		{"AttributeTwice", group(`  priority = 1001`), `agent.hcl:7,3-11: Attribute redefined;`},
		{"PriorityNotNumber", strings.Replace(group(""), "priority = 100", `priority = "high"`, 1), `agent.hcl:5,14-20: group "egress".priority: must be a whole number (got "high")`},
		{"PriorityFraction", strings.Replace(group(""), "priority = 100", `priority = 1.5`, 1), `agent.hcl:5,14-17: group "egress".priority: must be a whole number (got 1.5)`},
		{"PriorityOutOfRange", strings.Replace(group(""), "priority = 100", `priority = 1001`, 1), `agent.hcl:5,14-18: group "egress".priority: must be between 1 and 1000 (got 1001)`},
		{"PriorityMissing", strings.Replace(group(""), "priority = 100", ``, 1), `agent.hcl:4,1-15: group "egress".priority: required`},
		{"ElasticIPMissing", strings.Replace(group(""), `elastic_ip = "eipalloc-0123"`, ``, 1), `agent.hcl:4,1-15: group "egress".elastic_ip: required`},
		{"ElasticIPPrivate", strings.Replace(group(""), `"eipalloc-0123"`, `"10.0.0.5"`, 1), `agent.hcl:6,16-26: group "egress".elastic_ip: must be an allocation id (eipalloc-…) or a public IPv4 address (got "10.0.0.5")`},
		{"ElasticIPBadID", strings.Replace(group(""), `"eipalloc-0123"`, `"eip-0123"`, 1), `group "egress".elastic_ip: must be an allocation id (eipalloc-…) or a public IPv4 address (got "eip-0123")`},
		{"GroupName", strings.Replace(group(""), `"egress"`, `"egress west"`, 1), `agent.hcl:4,7-20: group "egress west".name: must match ^[a-zA-Z0-9_.-]{1,32}$ (got "egress west")`},
		{"RouteTable", group(`  route_tables = ["rtb-0123", "route-1"]`), `agent.hcl:7,18-41: group "egress".route_tables: must look like rtb-0123456789abcdef0 (got "route-1")`},
		{"RouteTableTwice", group(`  route_tables = ["rtb-0123", "rtb-0123"]`), `group "egress".route_tables: listed twice (got "rtb-0123")`},
		{"NoRouteTables", group(`  discover_route_tables = false`), `agent.hcl:7,27-32: group "egress".discover_route_tables: no route table would be managed`},
		{"Destination", group(`  destinations = ["0.0.0.0/0", "10.1.0.0/33"]`), `agent.hcl:7,18-46: group "egress".destinations: must be an IPv4 CIDR such as 10.0.0.0/16 (got "10.1.0.0/33")`},
		{"DestinationHostBits", group(`  destinations = ["10.1.2.3/16"]`), `group "egress".destinations: must be a network address: host bits are set (got "10.1.2.3/16", did you mean "10.1.0.0/16"?)`},
		{"DestinationIPv6", group(`  destinations = ["::/0"]`), `group "egress".destinations: must be an IPv4 CIDR such as 10.0.0.0/16 (got "::/0")`},
		{"DestinationsEmpty", group(`  destinations = []`), `group "egress".destinations: must list at least one CIDR`},
		{"Target", group(`  target = "nat-gateway"`), `agent.hcl:7,12-25: group "egress".target: must be one of "instance", "eni" (got "nat-gateway")`},
		{"Failback", group(`  failback = "never"`), `agent.hcl:7,14-21: group "egress".failback: must be one of "auto", "manual" (got "never")`},
		{"TagsNotMap", group(`  route_table_tags = ["a"]`), `agent.hcl:7,22-27: group "egress".route_table_tags: must be a map of strings (got tuple)`},
		{"TagKeyEmpty", group(`  route_table_tags = { "" = "x" }`), `group "egress".route_table_tags: tag keys must be 1 to 128 characters (got "")`},
		{"DiscoverNotBool", group(`  discover_route_tables = "maybe"`), `agent.hcl:7,27-34: group "egress".discover_route_tables: must be true or false (got "maybe")`},

		// gossip: the attribute given by a case is on line 3.
		{"Bind", gossip(`  bind = "eth0:7946"`), `agent.hcl:3,10-21: gossip.bind: must be an IP address or IP:port (got "eth0:7946")`},
		{"BindPort", gossip(`  bind = "0.0.0.0:70000"`), `agent.hcl:3,10-25: gossip.bind: must be an IP address or IP:port (got "0.0.0.0:70000")`},
		{"Advertise", gossip(`  advertise = "0.0.0.0"`), `agent.hcl:3,15-24: gossip.advertise: must be an IP address peers can reach (got "0.0.0.0")`},
		{"Peer", gossip(`  peers = ["198.18.1.11", "198.18.1.12:0"]`), `agent.hcl:3,11-43: gossip.peers[1]: must be host or host:port with a port of 1..65535 (got "198.18.1.12:0")`},
		{"PeerHostname", gossip(`  peers = ["nat_a.example"]`), `gossip.peers[0]: must be host or host:port with a port of 1..65535 (got "nat_a.example:7946")`},
		{"PeerTwice", gossip(`  peers = ["198.18.1.11", "198.18.1.11:7946"]`), `gossip.peers[1]: duplicate of gossip.peers[0] (got "198.18.1.11:7946")`},
		{"Profile", gossip(`  profile = "wan"`), `agent.hcl:3,13-18: gossip.profile: must be one of "fast", "lan" (got "wan")`},
		{"ProbeIntervalTooShort", gossip(`  probe_interval = "10ms"` + "\n  probe_timeout = \"5ms\""), `agent.hcl:3,20-26: gossip.probe_interval: must be at least 50ms (got 10ms)`},
		{"ProbeTimeoutNotLess", gossip(`  probe_timeout = "200ms"`), `agent.hcl:3,19-26: gossip.probe_timeout: must be less than probe_interval 200ms (got 200ms)`},
		{"ProbeTimeoutNotLessLAN", gossip(`  profile = "lan"` + "\n  probe_timeout = \"1s\""), `agent.hcl:4,19-23: gossip.probe_timeout: must be less than probe_interval 1s (got 1s)`},
		{"SuspicionMult", gossip(`  suspicion_mult = 0`), `agent.hcl:3,20-21: gossip.suspicion_mult: must be between 1 and 100 (got 0)`},
		{"GossipInterval", gossip(`  gossip_interval = "-1s"`), `gossip.gossip_interval: must be at least 10ms (got -1s)`},
		{"RejoinInterval", gossip(`  rejoin_interval = "100ms"`), `agent.hcl:3,21-28: gossip.rejoin_interval: must be at least 1s (got 100ms)`},
		{"ConfirmProbesZero", gossip(`  confirm_probes = 0`), `agent.hcl:3,20-21: gossip.confirm_probes: must be between 1 and 20 (got 0)`},
		{"ConfirmProbesTooMany", gossip(`  confirm_probes = 21`), `gossip.confirm_probes: must be between 1 and 20 (got 21)`},
		{"ConfirmTimeout", gossip(`  confirm_timeout = "0s"`), `gossip.confirm_timeout: must be at least 10ms (got 0s)`},
		{"HeartbeatTooShort", gossip(`  heartbeat_interval = "5ms"`), `gossip.heartbeat_interval: must be "0s" (off) or at least 10ms (got 5ms)`},
		{"HeartbeatNegative", gossip(`  heartbeat_interval = "-1s"`), `gossip.heartbeat_interval: must be "0s" (off) or at least 10ms (got -1s)`},
		{"VariableNotAllowed", gossip(`  profile = var.profile`), `agent.hcl:3,13-16: gossip.profile: Variables not allowed;`},

		// other blocks: the attribute is on line 10.
		{"NodeInstanceID", block("node", `instance_id = "inst-1"`), `agent.hcl:10,15-23: node.instance_id: must look like i-0123456789abcdef0 (got "inst-1")`},
		{"NodeRegion", block("node", `region = "US East"`), `node.region: must be an AWS region such as us-east-1 (got "US East")`},
		{"NodeZone", block("node", `availability_zone = "east"`), `node.availability_zone: must be an availability zone such as us-east-1a (got "east")`},
		{"NodeLocalIPv4", block("node", `local_ipv4 = "198.18.1.300"`), `node.local_ipv4: must be an IPv4 address (got "198.18.1.300")`},
		{"NodeMAC", block("node", `mac = "0e:00:00"`), `node.mac: must be a MAC address such as 0e:12:34:56:78:9a (got "0e:00:00")`},
		{"NodeVPCCIDR", block("node", `vpc_cidr = "198.18.0.0"`), `node.vpc_cidr: must be an IPv4 CIDR such as 10.0.0.0/16 (got "198.18.0.0")`},
		{"NodeIMDS", block("node", `imds_endpoint = "169.254.169.254"`), `node.imds_endpoint: must be an http:// or https:// URL (got "169.254.169.254")`},
		{"EC2Region", block("ec2", `region = "mars"`), `ec2.region: must be an AWS region such as us-east-1 (got "mars")`},
		{"EC2Endpoint", block("ec2", `endpoint = "localhost:5000"`), `ec2.endpoint: must be an http:// or https:// URL (got "localhost:5000")`},
		{"EC2MaxConcurrency", block("ec2", `max_concurrency = 65`), `agent.hcl:10,19-21: ec2.max_concurrency: must be between 1 and 64 (got 65)`},
		{"EC2CallTimeout", block("ec2", `call_timeout = "1ms"`), `ec2.call_timeout: must be at least 100ms (got 1ms)`},
		{"EC2Reconcile", block("ec2", `reconcile_interval = "500ms"`), `agent.hcl:10,22-29: ec2.reconcile_interval: must be at least 1s (got 500ms)`},
		{"ControlSocketEmpty", block("control", `socket = ""`), `agent.hcl:10,10-12: control.socket: must be a path`},
		{"ControlSocketLong", block("control", `socket = "/`+strings.Repeat("s", 120)+`"`), `control.socket: must be at most 107 bytes long`},
		{"ControlStateFileRelative", block("control", `state_file = "state.json"`), `control.state_file: must be an absolute path, or "" to keep no state (got "state.json")`},
		{"LogLevel", block("log", `level = "verbose"`), `agent.hcl:10,9-18: log.level: must be one of "trace", "debug", "info", "warn", "error" (got "verbose")`},
		{"LogFormat", block("log", `format = "xml"`), `log.format: must be one of "auto", "text", "json" (got "xml")`},
		{"DatapathNoInterface", block("datapath", `manage = true`), `agent.hcl:9,1-9: datapath.public_interface: required when manage = true`},
		{"DatapathInterface", block("datapath", `public_interface = "eth0/1"`), `datapath.public_interface: must be a network interface name of at most 15 characters (got "eth0/1")`},
		{"DatapathMasquerade", block("datapath", `masquerade_source = "vpc"`), `datapath.masquerade_source: must be an IPv4 CIDR such as 10.0.0.0/16 (got "vpc")`},
		{"DatapathCheckInterval", block("datapath", `check_interval = "1"`), `agent.hcl:10,18-21: datapath.check_interval: must be a duration such as "500ms" or "30s" (got "1")`},
		{"DatapathEgressProbe", block("datapath", `egress_probe = "198.18.200.1"`), `datapath.egress_probe: must be host:port (got "198.18.200.1")`},
		{"DatapathEgressProbeTimeout", block("datapath", `egress_probe_timeout = "0s"`), `datapath.egress_probe_timeout: must be at least 10ms (got 0s)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines := parseErr(t, tc.src)
			if !hasLine(lines, tc.want) {
				t.Errorf("error lines:\n%s\nwant one containing:\n%s\ninput:\n%s", strings.Join(lines, "\n"), tc.want, tc.src)
			}
		})
	}
}

func TestParse_Groups(t *testing.T) {
	t.Run("DuplicateName", func(t *testing.T) {
		lines := parseErr(t, withTables(minimal, "rtb-01")+"group \"egress\" {\n  priority = 50\n  elastic_ip = \"eipalloc-0456\"\n  route_tables = [\"rtb-02\"]\n}\n")
		want := `agent.hcl:10,1-15: group "egress": duplicate group name: group 1 and group 2 are both named "egress"`
		if len(lines) != 1 || lines[0] != want {
			t.Errorf("error lines %q, want exactly %q", lines, want)
		}
	})
	t.Run("SameElasticIP", func(t *testing.T) {
		lines := parseErr(t, minimal+"group \"other\" {\n  priority = 50\n  elastic_ip = \"eipalloc-0123456789abcdef0\"\n}\n")
		if !hasLine(lines, `agent.hcl:11,16-44: group "other".elastic_ip: already used by group "egress" (got "eipalloc-0123456789abcdef0")`) {
			t.Errorf("error lines %q", lines)
		}
	})
	t.Run("SameRouteTwice", func(t *testing.T) {
		src := strings.Replace(minimal, `priority   = 100`, "priority = 100\n  route_tables = [\"rtb-01\"]", 1) +
			"group \"other\" {\n  priority = 50\n  elastic_ip = \"eipalloc-0456\"\n  route_tables = [\"rtb-02\", \"rtb-01\"]\n}\n"
		lines := parseErr(t, src)
		if !hasLine(lines, `group "other".route_tables: route 0.0.0.0/0 in rtb-01 is already managed by group "egress" (got "rtb-01")`) {
			t.Errorf("error lines %q", lines)
		}
	})
	t.Run("SameRouteTableOtherDestination", func(t *testing.T) {
		src := strings.Replace(minimal, `priority   = 100`, "priority = 100\n  route_tables = [\"rtb-01\"]", 1) +
			"group \"other\" {\n  priority = 50\n  elastic_ip = \"198.51.100.7\"\n  route_tables = [\"rtb-01\"]\n  destinations = [\"203.0.113.0/24\"]\n}\n"
		c := mustParse(t, src)
		if len(c.Groups) != 2 || c.Groups[1].Name != "other" {
			t.Fatalf("groups = %+v", c.Groups)
		}
	})
	t.Run("NoGroup", func(t *testing.T) {
		lines := parseErr(t, "gossip {\n  insecure_plaintext = true\n}\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "group: at least one group block is required") {
			t.Errorf("error lines %q", lines)
		}
	})
	t.Run("OrderAndLookup", func(t *testing.T) {
		src := withTables(minimal, "rtb-01") + "group \"b\" {\n  priority = 1\n  elastic_ip = \"eipalloc-02\"\n  route_tables = [\"rtb-02\"]\n}\n" +
			"group \"a\" {\n  priority = 2\n  elastic_ip = \"eipalloc-03\"\n  route_tables = [\"rtb-03\"]\n}\n"
		c := mustParse(t, src)
		var names []string
		for _, g := range c.Groups {
			names = append(names, g.Name)
		}
		if want := []string{"egress", "b", "a"}; !reflect.DeepEqual(names, want) {
			t.Errorf("group order %q, want %q", names, want)
		}
		g, ok := c.Group("a")
		if !ok || g.Priority != 2 {
			t.Errorf("Group(a) = %+v, %v", g, ok)
		}
		g.Priority = 3 // Group returns the config's own group, not a copy.
		if c.Groups[2].Priority != 3 {
			t.Error("Group returned a copy")
		}
		if _, ok := c.Group("missing"); ok {
			t.Error("Group(missing) found something")
		}
	})
}

func TestParse_Key(t *testing.T) {
	withGossip := func(gossip string) string {
		return strings.Replace(minimal, "  insecure_plaintext = true\n", gossip, 1)
	}
	t.Run("Inline", func(t *testing.T) {
		for _, n := range []int{16, 24, 32} {
			raw := []byte(strings.Repeat("k", n))
			c := mustParse(t, withGossip(`  encrypt_key = "`+base64.StdEncoding.EncodeToString(raw)+"\"\n"))
			if string(c.Gossip.EncryptKey) != string(raw) {
				t.Errorf("%d-byte key decoded as %q", n, c.Gossip.EncryptKey)
			}
		}
	})

	tests := []struct {
		name   string
		gossip string
		want   string
	}{
		{"Missing", "", `agent.hcl:2,1-7: gossip.encrypt_key: required unless insecure_plaintext = true`},
		{"MissingNoGossipBlock", "-", `gossip.encrypt_key: required unless insecure_plaintext = true`},
		{"PlaintextFalse", "  insecure_plaintext = false\n", `gossip.encrypt_key: required unless insecure_plaintext = true`},
		{"WrongLength", `  encrypt_key = "` + base64.StdEncoding.EncodeToString([]byte("0123456789")) + "\"\n",
			`agent.hcl:3,17-35: gossip.encrypt_key: key must decode to 16, 24 or 32 bytes (got 10 bytes)`},
		{"NotBase64", "  encrypt_key = \"not base64!\"\n", `agent.hcl:3,17-30: gossip.encrypt_key: must be base64, as printed by`},
		{"Both", "  encrypt_key = \"" + key32 + "\"\n  encrypt_key_file = \"/etc/natganker/gossip.key\"\n",
			`agent.hcl:4,22-49: gossip.encrypt_key_file: conflicts with encrypt_key at agent.hcl:3,17-63; set only one`},
		{"KeyAndPlaintext", "  encrypt_key = \"" + key32 + "\"\n  insecure_plaintext = true\n",
			`agent.hcl:4,24-28: gossip.insecure_plaintext: must not be true when a gossip key is set (got true)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := withGossip(tc.gossip)
			if tc.gossip == "-" {
				src = minimal[strings.Index(minimal, "group"):]
			}
			lines := parseErr(t, src)
			if !hasLine(lines, tc.want) {
				t.Errorf("error lines:\n%s\nwant one containing:\n%s", strings.Join(lines, "\n"), tc.want)
			}
			// The key is a secret: no error may repeat it.
			if hasLine(lines, key32) {
				t.Errorf("error shows the key: %q", lines)
			}
		})
	}
}

func TestParse_Addresses(t *testing.T) {
	tests := []struct {
		name          string
		gossip        string
		bind          string
		advertise     string
		peers         []string
		bindPort, adv int
	}{
		{"Defaults", ``, "0.0.0.0", "", nil, 7946, 7946},
		{"BindPortCarriesOver", "bind = \"198.18.1.11:8000\"\npeers = [\"198.18.1.12\", \"nat-b.lab.example\", \"198.18.1.13:9000\"]",
			"198.18.1.11", "", []string{"198.18.1.12:8000", "nat-b.lab.example:8000", "198.18.1.13:9000"}, 8000, 8000},
		{"AdvertiseWithoutPort", "bind = \"0.0.0.0:8000\"\nadvertise = \"198.18.1.11\"", "0.0.0.0", "198.18.1.11", nil, 8000, 8000},
		{"AdvertiseWithPort", "advertise = \"198.18.1.11:17946\"", "0.0.0.0", "198.18.1.11", nil, 7946, 17946},
		{"IPv6", "bind = \"[::]:7000\"\npeers = [\"fd00::1\", \"[fd00::2]\", \"[fd00::3]:7001\"]",
			"::", "", []string{"[fd00::1]:7000", "[fd00::2]:7000", "[fd00::3]:7001"}, 7000, 7000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, strings.Replace(minimal, "insecure_plaintext = true", "insecure_plaintext = true\n"+tc.gossip, 1))
			g := c.Gossip
			if g.BindAddr != tc.bind || g.BindPort != tc.bindPort || g.AdvertiseAddr != tc.advertise ||
				g.AdvertisePort != tc.adv || !reflect.DeepEqual(g.Peers, tc.peers) {
				t.Errorf("got bind %s:%d advertise %s:%d peers %q", g.BindAddr, g.BindPort, g.AdvertiseAddr, g.AdvertisePort, g.Peers)
			}
		})
	}
}

func TestParse_ReportsEveryProblem(t *testing.T) {
	src := `gossip {
  probe_interval = "1s"
  confirm_probes = 0
}
group "egress" {
  priority   = 0
  elastic_ip = "eipalloc-0123"
  failback   = "sometimes"
}
`
	lines := parseErr(t, src)
	want := []string{
		`agent.hcl:1,1-7: gossip.encrypt_key: required unless insecure_plaintext = true: set encrypt_key or encrypt_key_file (generate one with ` + "`natganker-agent keygen`)",
		`agent.hcl:3,20-21: gossip.confirm_probes: must be between 1 and 20 (got 0)`,
		`agent.hcl:6,16-17: group "egress".priority: must be between 1 and 1000 (got 0)`,
		`agent.hcl:8,16-27: group "egress".failback: must be one of "auto", "manual" (got "sometimes")`,
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("error lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestValidate_BuiltInCode(t *testing.T) {
	c := Default()
	c.Gossip.InsecurePlaintext = true
	g := DefaultGroup("egress")
	g.Priority = 10
	g.ElasticIP = "eipalloc-0123"
	c.Groups = append(c.Groups, g)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c.Groups[0].FailbackDelay = 0
	err := c.Validate()
	// Without a file there is no position: the message starts with the path.
	if want := `group "egress".failback_delay: must be at least 1s (got 0s)`; err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %q", err, want)
	}
}

func TestParse_JSON(t *testing.T) {
	src := `{
  "gossip": {"insecure_plaintext": true, "profile": "lan"},
  "group": {"egress": {"priority": 100, "elastic_ip": "eipalloc-0123", "failback_delay": "45s"}}
}`
	c, err := Parse("agent.json", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if g, ok := c.Group("egress"); !ok || g.FailbackDelay != 45*time.Second || c.Gossip.ProbeInterval != time.Second {
		t.Errorf("group %+v, probe interval %s", g, c.Gossip.ProbeInterval)
	}
	_, err = Parse("agent.json", []byte(`{"gossip": {"insecure_plaintext": true, "colour": "blue"}}`))
	if err == nil || !strings.Contains(err.Error(), `agent.json:1,41-49: gossip: unknown attribute "colour" (expected one of`) {
		t.Errorf("err = %v", err)
	}
}
