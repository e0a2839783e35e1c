package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// The blocks of a file and their attributes. gohcl decodes each block into its struct:
// an attribute's name is written once, in its tag, and the decoder turns the attribute into
// a Config field with a message that names the setting and shows the bad value. Rest holds
// what the tags do not name, reported as unknown.

type nodeBody struct {
	InstanceID       *hcl.Attribute `hcl:"instance_id,optional"`
	Region           *hcl.Attribute `hcl:"region,optional"`
	AvailabilityZone *hcl.Attribute `hcl:"availability_zone,optional"`
	LocalIPv4        *hcl.Attribute `hcl:"local_ipv4,optional"`
	MAC              *hcl.Attribute `hcl:"mac,optional"`
	VPCCIDR          *hcl.Attribute `hcl:"vpc_cidr,optional"`
	IMDSEndpoint     *hcl.Attribute `hcl:"imds_endpoint,optional"`
	Rest             hcl.Body       `hcl:",remain"`
}

type gossipBody struct {
	Bind              *hcl.Attribute `hcl:"bind,optional"`
	Advertise         *hcl.Attribute `hcl:"advertise,optional"`
	Peers             *hcl.Attribute `hcl:"peers,optional"`
	EncryptKey        *hcl.Attribute `hcl:"encrypt_key,optional"`
	EncryptKeyFile    *hcl.Attribute `hcl:"encrypt_key_file,optional"`
	InsecurePlaintext *hcl.Attribute `hcl:"insecure_plaintext,optional"`
	Profile           *hcl.Attribute `hcl:"profile,optional"`
	ProbeInterval     *hcl.Attribute `hcl:"probe_interval,optional"`
	ProbeTimeout      *hcl.Attribute `hcl:"probe_timeout,optional"`
	SuspicionMult     *hcl.Attribute `hcl:"suspicion_mult,optional"`
	GossipInterval    *hcl.Attribute `hcl:"gossip_interval,optional"`
	RejoinInterval    *hcl.Attribute `hcl:"rejoin_interval,optional"`
	ConfirmProbes     *hcl.Attribute `hcl:"confirm_probes,optional"`
	ConfirmTimeout    *hcl.Attribute `hcl:"confirm_timeout,optional"`
	HeartbeatInterval *hcl.Attribute `hcl:"heartbeat_interval,optional"`
	Rest              hcl.Body       `hcl:",remain"`
}

type groupBody struct {
	Priority            *hcl.Attribute `hcl:"priority,optional"`
	ElasticIP           *hcl.Attribute `hcl:"elastic_ip,optional"`
	RouteTables         *hcl.Attribute `hcl:"route_tables,optional"`
	RouteTableTags      *hcl.Attribute `hcl:"route_table_tags,optional"`
	DiscoverRouteTables *hcl.Attribute `hcl:"discover_route_tables,optional"`
	Destinations        *hcl.Attribute `hcl:"destinations,optional"`
	Target              *hcl.Attribute `hcl:"target,optional"`
	Failback            *hcl.Attribute `hcl:"failback,optional"`
	FailbackDelay       *hcl.Attribute `hcl:"failback_delay,optional"`
	Rest                hcl.Body       `hcl:",remain"`
}

type ec2Body struct {
	Region            *hcl.Attribute `hcl:"region,optional"`
	Endpoint          *hcl.Attribute `hcl:"endpoint,optional"`
	MaxConcurrency    *hcl.Attribute `hcl:"max_concurrency,optional"`
	CallTimeout       *hcl.Attribute `hcl:"call_timeout,optional"`
	ReconcileInterval *hcl.Attribute `hcl:"reconcile_interval,optional"`
	Rest              hcl.Body       `hcl:",remain"`
}

type controlBody struct {
	Socket    *hcl.Attribute `hcl:"socket,optional"`
	StateFile *hcl.Attribute `hcl:"state_file,optional"`
	Rest      hcl.Body       `hcl:",remain"`
}

type logBody struct {
	Level  *hcl.Attribute `hcl:"level,optional"`
	Format *hcl.Attribute `hcl:"format,optional"`
	Rest   hcl.Body       `hcl:",remain"`
}

type datapathBody struct {
	Manage             *hcl.Attribute `hcl:"manage,optional"`
	PublicInterface    *hcl.Attribute `hcl:"public_interface,optional"`
	MasqueradeSource   *hcl.Attribute `hcl:"masquerade_source,optional"`
	CheckInterval      *hcl.Attribute `hcl:"check_interval,optional"`
	EgressProbe        *hcl.Attribute `hcl:"egress_probe,optional"`
	EgressProbeTimeout *hcl.Attribute `hcl:"egress_probe_timeout,optional"`
	Rest               hcl.Body       `hcl:",remain"`
}

// blockKind is a block type a file may hold and how to decode it.
type blockKind struct {
	name   string
	label  string // the label's name, or "" for a block without one
	decode func(*decoder, *hcl.Block)
}

// blockKinds are the blocks of a file, in the order the example documents them. Every
// block but group may appear once.
var blockKinds = []blockKind{
	{name: "node", decode: (*decoder).node},
	{name: "gossip", decode: (*decoder).gossip},
	{name: "group", label: "name", decode: (*decoder).group},
	{name: "ec2", decode: (*decoder).ec2},
	{name: "control", decode: (*decoder).control},
	{name: "log", decode: (*decoder).log},
	{name: "datapath", decode: (*decoder).datapath},
	{name: "telemetry", decode: (*decoder).telemetry},
	{name: "hooks", decode: (*decoder).hooks},
	{name: "handoff", decode: (*decoder).handoff},
	{name: "conntrack_sync", decode: (*decoder).conntrackSync},
}

// fileSchema is the top level of a file: the blocks of blockKinds and nothing else.
var fileSchema = func() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, k := range blockKinds {
		h := hcl.BlockHeaderSchema{Type: k.name}
		if k.label != "" {
			h.LabelNames = []string{k.label}
		}
		s.Blocks = append(s.Blocks, h)
	}
	return s
}()

// decoder fills a Config from a file's body, collecting problems instead of stopping at the
// first one.
type decoder struct {
	cfg      *Config
	keyDir   string
	problems problems
	// discoverSet records, per group, whether discover_route_tables was written.
	discoverSet []bool
}

func (d *decoder) file(body hcl.Body) {
	content, rest, diags := body.PartialContent(fileSchema)
	d.problems.addDiags(diags, "")
	d.problems = append(d.problems, unknowns(rest, fileSchema, "")...)

	first := make(map[string]*hcl.Block)
	for _, block := range content.Blocks {
		i := slices.IndexFunc(blockKinds, func(k blockKind) bool { return k.name == block.Type })
		if blockKinds[i].label == "" {
			if f, dup := first[block.Type]; dup {
				d.problems.add(&block.DefRange, "Duplicate %s block; A %s block may appear only once; the first one is at %s.",
					block.Type, block.Type, f.DefRange)
				continue
			}
			first[block.Type] = block
		}
		blockKinds[i].decode(d, block)
	}
	d.resolveDiscovery()
}

// resolveDiscovery applies the default of discover_route_tables. Discovery takes every
// route table routed via a cluster member, which cannot tell one group's tables from
// another's: it is on by default only when the file has a single group.
func (d *decoder) resolveDiscovery() {
	if len(d.cfg.Groups) < 2 {
		return
	}
	for i := range d.cfg.Groups {
		if !d.discoverSet[i] {
			d.cfg.Groups[i].DiscoverRouteTables = false
		}
	}
}

// section is one block being decoded: the key its ranges are stored under and the path
// used in messages.
type section struct {
	d    *decoder
	key  string // prefix of rangeKey, e.g. "gossip" or "group[0]"
	path string // prefix shown to users, e.g. `gossip` or `group "egress"`
}

// section decodes block into body, a pointer to one of the *Body structs, and reports
// what the struct does not name. It returns false when the block cannot be decoded.
func (d *decoder) section(block *hcl.Block, key, path string, body any, rest *hcl.Body) (section, bool) {
	d.cfg.ranges[key] = block.DefRange
	if diags := gohcl.DecodeBody(block.Body, nil, body); diags.HasErrors() {
		d.problems.addDiags(diags, path)
		return section{}, false
	}
	schema, _ := gohcl.ImpliedBodySchema(body)
	d.problems = append(d.problems, unknowns(*rest, schema, path)...)
	return section{d: d, key: key, path: path}, true
}

func (d *decoder) node(block *hcl.Block) {
	var b nodeBody
	s, ok := d.section(block, "node", "node", &b, &b.Rest)
	if !ok {
		return
	}
	n := &d.cfg.Node
	s.str(b.InstanceID, &n.InstanceID)
	s.str(b.Region, &n.Region)
	s.str(b.AvailabilityZone, &n.AvailabilityZone)
	s.str(b.LocalIPv4, &n.LocalIPv4)
	s.str(b.MAC, &n.MAC)
	s.str(b.VPCCIDR, &n.VPCCIDR)
	s.str(b.IMDSEndpoint, &n.IMDSEndpoint)
}

func (d *decoder) gossip(block *hcl.Block) {
	var b gossipBody
	s, ok := d.section(block, "gossip", "gossip", &b, &b.Rest)
	if !ok {
		return
	}
	g := &d.cfg.Gossip
	s.boolean(b.InsecurePlaintext, &g.InsecurePlaintext)
	s.str(b.Profile, &g.Profile)
	// The profile supplies the timings not set explicitly. An unknown profile changes
	// nothing; Validate reports it.
	p, known := profiles[g.Profile]
	if !s.duration(b.ProbeInterval, &g.ProbeInterval) && known {
		g.ProbeInterval = p.ProbeInterval
	}
	if !s.duration(b.ProbeTimeout, &g.ProbeTimeout) && known {
		g.ProbeTimeout = p.ProbeTimeout
	}
	if !s.integer(b.SuspicionMult, &g.SuspicionMult) && known {
		g.SuspicionMult = p.SuspicionMult
	}
	if !s.duration(b.GossipInterval, &g.GossipInterval) && known {
		g.GossipInterval = p.GossipInterval
	}
	s.duration(b.RejoinInterval, &g.RejoinInterval)
	s.integer(b.ConfirmProbes, &g.ConfirmProbes)
	s.duration(b.ConfirmTimeout, &g.ConfirmTimeout)
	if !s.duration(b.HeartbeatInterval, &g.HeartbeatInterval) && known {
		g.HeartbeatInterval = p.HeartbeatInterval
	}

	var bind string
	if s.str(b.Bind, &bind) {
		host, port, err := splitHostPort(bind, DefaultGossipPort)
		if err != nil || net.ParseIP(host) == nil {
			s.errorf(b.Bind, "must be an IP address or IP:port (got %q)", bind)
		} else {
			g.BindAddr, g.BindPort = host, port
		}
	}
	g.AdvertisePort = g.BindPort
	var advertise string
	if s.str(b.Advertise, &advertise) && advertise != "" {
		host, port, err := splitHostPort(advertise, g.BindPort)
		if err != nil || net.ParseIP(host) == nil {
			s.errorf(b.Advertise, "must be an IP address or IP:port (got %q)", advertise)
		} else {
			g.AdvertiseAddr, g.AdvertisePort = host, port
		}
	}
	// Peers that do not parse are kept as written for Validate to report by index.
	var peers []string
	s.strList(b.Peers, &peers)
	for i, p := range peers {
		if host, port, err := splitHostPort(p, g.BindPort); err == nil {
			peers[i] = net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
	g.Peers = peers

	if b.EncryptKey != nil && b.EncryptKeyFile != nil {
		s.errorf(b.EncryptKeyFile, "conflicts with %s at %s; set only one", b.EncryptKey.Name, b.EncryptKey.Expr.Range())
	}
	var key string
	if s.str(b.EncryptKey, &key) {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
		if err != nil {
			s.errorf(b.EncryptKey, "must be base64, as printed by `natganker-agent keygen` (%v)", err)
		} else {
			g.EncryptKey = raw
		}
	}
	var keyFile string
	if s.str(b.EncryptKeyFile, &keyFile) && keyFile != "" {
		g.EncryptKeyFile = keyFile
		if d.keyDir != "" {
			if !filepath.IsAbs(g.EncryptKeyFile) {
				g.EncryptKeyFile = filepath.Join(d.keyDir, g.EncryptKeyFile)
			}
			primary, others, err := readKeyFile(g.EncryptKeyFile)
			if err != nil {
				s.errorf(b.EncryptKeyFile, "%v", err)
			} else {
				g.EncryptKey, g.OtherKeys = primary, others
			}
		}
	}
}

func (d *decoder) group(block *hcl.Block) {
	if len(block.Labels) != 1 {
		return // HCL has reported the missing label
	}
	i := len(d.cfg.Groups)
	name := block.Labels[0]
	key := fmt.Sprintf("group[%d]", i)
	var b groupBody
	s, ok := d.section(block, key, fmt.Sprintf("group %q", name), &b, &b.Rest)
	if !ok {
		return
	}
	d.cfg.ranges[key+".name"] = block.LabelRanges[0]
	g := DefaultGroup(name)
	s.integer(b.Priority, &g.Priority)
	s.str(b.ElasticIP, &g.ElasticIP)
	s.strList(b.RouteTables, &g.RouteTables)
	s.strMap(b.RouteTableTags, &g.RouteTableTags)
	d.discoverSet = append(d.discoverSet, s.boolean(b.DiscoverRouteTables, &g.DiscoverRouteTables))
	s.strList(b.Destinations, &g.Destinations)
	s.str(b.Target, &g.Target)
	s.str(b.Failback, &g.Failback)
	s.duration(b.FailbackDelay, &g.FailbackDelay)
	d.cfg.Groups = append(d.cfg.Groups, g)
}

func (d *decoder) ec2(block *hcl.Block) {
	var b ec2Body
	s, ok := d.section(block, "ec2", "ec2", &b, &b.Rest)
	if !ok {
		return
	}
	e := &d.cfg.EC2
	s.str(b.Region, &e.Region)
	s.str(b.Endpoint, &e.Endpoint)
	s.integer(b.MaxConcurrency, &e.MaxConcurrency)
	s.duration(b.CallTimeout, &e.CallTimeout)
	s.duration(b.ReconcileInterval, &e.ReconcileInterval)
}

func (d *decoder) control(block *hcl.Block) {
	var b controlBody
	s, ok := d.section(block, "control", "control", &b, &b.Rest)
	if !ok {
		return
	}
	s.str(b.Socket, &d.cfg.Control.Socket)
	s.str(b.StateFile, &d.cfg.Control.StateFile)
}

func (d *decoder) log(block *hcl.Block) {
	var b logBody
	s, ok := d.section(block, "log", "log", &b, &b.Rest)
	if !ok {
		return
	}
	s.str(b.Level, &d.cfg.Log.Level)
	s.str(b.Format, &d.cfg.Log.Format)
}

func (d *decoder) datapath(block *hcl.Block) {
	var b datapathBody
	s, ok := d.section(block, "datapath", "datapath", &b, &b.Rest)
	if !ok {
		return
	}
	p := &d.cfg.Datapath
	s.boolean(b.Manage, &p.Manage)
	s.str(b.PublicInterface, &p.PublicInterface)
	s.str(b.MasqueradeSource, &p.MasqueradeSource)
	s.duration(b.CheckInterval, &p.CheckInterval)
	s.str(b.EgressProbe, &p.EgressProbe)
	s.duration(b.EgressProbeTimeout, &p.EgressProbeTimeout)
}
