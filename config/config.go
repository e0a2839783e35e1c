package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is the whole agent configuration. Build one with Default, Parse or Load; a Config
// built by hand should be checked with Validate before use.
type Config struct {
	// Node overrides what the instance metadata service reports about this instance.
	Node Node
	// Gossip configures membership and failure detection between the agents.
	Gossip Gossip
	// Groups are the units of failover, in the order they appear in the file. At least one
	// is required and names are unique.
	Groups []Group
	// EC2 configures how the agent talks to the EC2 API.
	EC2 EC2
	// Control configures the local control socket used by the CLI.
	Control Control
	// Log configures the agent's log output.
	Log Log
	// Datapath configures the kernel side of a NAT instance (forwarding and masquerade).
	Datapath Datapath
	// Telemetry configures the Prometheus endpoint.
	Telemetry Telemetry
	// Hooks are commands run on ownership and membership events.
	Hooks Hooks
	// Handoff configures planned handovers on notices of the instance's end.
	Handoff Handoff
	// ConntrackSync configures the replication of masqueraded flows to the standbys.
	ConntrackSync ConntrackSync

	// ranges remembers where each setting was written, keyed by rangeKey, so that
	// Validate can point at the offending line. Empty for a Config built in code.
	ranges map[string]hcl.Range
}

// Node overrides what IMDS reports about this instance. An empty field means "ask IMDS".
// Overrides exist for tests, labs and unusual networks; on EC2 they are normally left empty.
type Node struct {
	// InstanceID is the EC2 instance id (i-…), also used as the gossip node name.
	InstanceID string
	// Region is the AWS region the instance runs in.
	Region string
	// AvailabilityZone is the instance's availability zone.
	AvailabilityZone string
	// LocalIPv4 is the instance's primary private IPv4 address.
	LocalIPv4 string
	// MAC is the MAC address of the instance's primary network interface.
	MAC string
	// VPCCIDR is the primary IPv4 CIDR of the instance's VPC.
	VPCCIDR string
	// IMDSEndpoint is the base URL of the instance metadata service; empty means the SDK's
	// default (http://169.254.169.254).
	IMDSEndpoint string
}

// Gossip configures the memberlist cluster the agents form.
//
// The gossip key: EncryptKey holds the decoded key (16, 24 or 32 bytes, selecting
// AES-128/192/256-GCM). It comes from encrypt_key (base64, in the file) or from
// encrypt_key_file (a file holding base64). Parse never reads other files, so after Parse a
// key given by encrypt_key_file is not loaded yet: EncryptKey is empty and EncryptKeyFile is
// set. Load reads the key file and fills EncryptKey; the agent should be configured
// through Load.
type Gossip struct {
	// BindAddr is the IP address memberlist listens on (TCP and UDP).
	BindAddr string
	// BindPort is the port memberlist listens on.
	BindPort int
	// AdvertiseAddr is the IP address peers should use to reach this agent; empty means the
	// local IPv4 address reported by IMDS (or Node.LocalIPv4).
	AdvertiseAddr string
	// AdvertisePort is the port peers should use to reach this agent.
	AdvertisePort int
	// Peers are the agents to join at start and to re-join when they go missing, each as
	// host:port (IP or hostname).
	Peers []string
	// EncryptKey is the decoded gossip encryption key (16, 24 or 32 bytes).
	EncryptKey []byte
	// OtherKeys are further keys from the key file's later lines: accepted from peers but
	// not sent with (a key rotation in progress).
	OtherKeys [][]byte
	// EncryptKeyFile is the file the key was read from, if any. Load resolves a relative
	// path against the directory of the configuration file and stores the result here.
	EncryptKeyFile string
	// InsecurePlaintext allows gossip without encryption. Anyone who can send a UDP packet
	// to the gossip port can then declare an agent dead and trigger a failover.
	InsecurePlaintext bool
	// Profile names the set of failure-detection timings used for fields not set
	// explicitly: "fast" (default) or "lan".
	Profile string
	// ProbeInterval is the time between failure-detection probes.
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a probe's ack; less than ProbeInterval.
	ProbeTimeout time.Duration
	// SuspicionMult scales the time a suspected node has to refute before it is declared dead.
	SuspicionMult int
	// GossipInterval is the time between gossip rounds.
	GossipInterval time.Duration
	// RejoinInterval is how often to re-join configured peers missing from the member list.
	RejoinInterval time.Duration
	// ConfirmProbes is the number of direct probes sent before believing a peer is dead.
	ConfirmProbes int
	// ConfirmTimeout bounds the whole confirmation burst.
	ConfirmTimeout time.Duration
	// HeartbeatInterval is how often the node that would take a group over pings its owner
	// directly; an owner silent for HeartbeatMisses of them is probed with a confirmation
	// burst at once, without waiting for memberlist's verdict. 0 turns this off.
	HeartbeatInterval time.Duration
}

// HeartbeatMisses is how many heartbeat intervals without a sign of life make the owner
// quiet enough to be probed with a confirmation burst.
const HeartbeatMisses = 2

// profile is a named set of failure-detection timings.
type profile struct {
	ProbeInterval     time.Duration
	ProbeTimeout      time.Duration
	SuspicionMult     int
	GossipInterval    time.Duration
	HeartbeatInterval time.Duration
}

// profiles are the failure-detection profiles gossip.profile may name. "fast" detects a dead
// peer in about a second on a quiet network; "lan" is memberlist's LAN defaults, slower
// (5–7 s) but tolerant of long pauses of the process.
var profiles = map[string]profile{
	"fast": {ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 3, GossipInterval: 100 * time.Millisecond,
		HeartbeatInterval: 50 * time.Millisecond},
	"lan": {ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond, SuspicionMult: 4, GossipInterval: 200 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond},
}

// DefaultProfile is the profile used when gossip.profile is not set.
const DefaultProfile = "fast"

// Group is one unit of failover: an Elastic IP and the route tables that follow it. The
// healthy agent with the highest priority for a group owns it.
type Group struct {
	// Name is the block label; it matches ^[a-zA-Z0-9_.-]{1,32}$.
	Name string
	// Priority is this agent's priority for the group, 1..1000; higher wins.
	Priority int
	// ElasticIP is the address moved to the owner: an allocation id (eipalloc-…) or a
	// public IPv4 address.
	ElasticIP string
	// RouteTables are route tables managed explicitly (rtb-…).
	RouteTables []string
	// RouteTableTags selects further route tables of the VPC by tag; all tags must match.
	RouteTableTags map[string]string
	// DiscoverRouteTables also manages every route table of the VPC whose destination route
	// targets a cluster member.
	DiscoverRouteTables bool
	// Destinations are the route destinations pointed at the owner (IPv4 CIDRs).
	Destinations []string
	// Target is what routes point at: "instance" or "eni".
	Target string
	// Failback is "auto" (a recovered higher-priority agent takes the group back after
	// FailbackDelay) or "manual" (it waits for an operator).
	Failback string
	// FailbackDelay is how long a recovered higher-priority agent must stay healthy before
	// it takes the group back.
	FailbackDelay time.Duration
}

// Target values.
const (
	TargetInstance = "instance"
	TargetENI      = "eni"
)

// Failback values.
const (
	FailbackAuto   = "auto"
	FailbackManual = "manual"
)

// EC2 configures the EC2 API client.
type EC2 struct {
	// Region overrides the region for API calls; empty means the instance's region.
	Region string
	// Endpoint overrides the EC2 endpoint URL (for example a local EC2 emulator).
	Endpoint string
	// MaxConcurrency bounds the number of EC2 calls in flight, 1..64.
	MaxConcurrency int
	// CallTimeout bounds one attempt of one EC2 call; failed attempts are retried, so a
	// call can take several times this long.
	CallTimeout time.Duration
	// ReconcileInterval is how often EC2 is re-read and corrected.
	ReconcileInterval time.Duration
}

// Control configures the local control socket.
type Control struct {
	// Socket is the path of the unix socket the CLI talks to.
	Socket string
	// StateFile keeps what must survive a restart of the agent: which peers took a group
	// across a partition, so that a restarted agent does not take it back. "" keeps
	// nothing.
	StateFile string
}

// Log configures logging.
type Log struct {
	// Level is trace, debug, info, warn or error.
	Level string
	// Format is auto (text on a terminal, JSON otherwise), text or json.
	Format string
}

// Datapath configures the kernel side of a NAT instance.
type Datapath struct {
	// Manage makes the agent set up ip_forward, send_redirects=0 and masquerade, and keep
	// them in place.
	Manage bool
	// PublicInterface is the interface traffic leaves by; required when Manage is true.
	PublicInterface string
	// MasqueradeSource is the source CIDR to masquerade; empty means the VPC CIDR.
	MasqueradeSource string
	// CheckInterval is how often the datapath settings are checked and repaired.
	CheckInterval time.Duration
	// EgressProbe is an optional host:port reached over TCP out of the public side to
	// prove egress works.
	EgressProbe string
	// EgressProbeTimeout bounds one egress probe.
	EgressProbeTimeout time.Duration
}

// Default returns the configuration used for every setting a file leaves out. It has no
// groups and no gossip key, so it does not pass Validate on its own.
func Default() *Config {
	p := profiles[DefaultProfile]
	return &Config{
		Gossip: Gossip{
			BindAddr:          "0.0.0.0",
			BindPort:          DefaultGossipPort,
			AdvertisePort:     DefaultGossipPort,
			Profile:           DefaultProfile,
			ProbeInterval:     p.ProbeInterval,
			ProbeTimeout:      p.ProbeTimeout,
			SuspicionMult:     p.SuspicionMult,
			GossipInterval:    p.GossipInterval,
			RejoinInterval:    5 * time.Second,
			ConfirmProbes:     10,
			ConfirmTimeout:    150 * time.Millisecond,
			HeartbeatInterval: p.HeartbeatInterval,
		},
		EC2: EC2{
			MaxConcurrency:    64,
			CallTimeout:       5 * time.Second,
			ReconcileInterval: 10 * time.Second,
		},
		Control: Control{Socket: "/run/natganker/agent.sock", StateFile: "/var/lib/natganker/state.json"},
		Log:     Log{Level: "info", Format: "auto"},
		Datapath: Datapath{
			CheckInterval:      time.Second,
			EgressProbeTimeout: time.Second,
		},
		Telemetry: defaultTelemetry,
		Hooks:     defaultHooks,
		Handoff:   defaultHandoff,

		ConntrackSync: defaultConntrackSync,
	}
}

// DefaultGossipPort is the gossip port used when bind, advertise or a peer names none.
const DefaultGossipPort = 7946

// DefaultGroup returns a group named name with every optional setting at its default.
// Priority and ElasticIP, which have no default, are left zero.
func DefaultGroup(name string) Group {
	return Group{
		Name:                name,
		DiscoverRouteTables: true,
		Destinations:        []string{"0.0.0.0/0"},
		Target:              TargetInstance,
		Failback:            FailbackAuto,
		FailbackDelay:       30 * time.Second,
	}
}

// Group returns the group with the given name.
func (c *Config) Group(name string) (*Group, bool) {
	for i := range c.Groups {
		if c.Groups[i].Name == name {
			return &c.Groups[i], true
		}
	}
	return nil, false
}
