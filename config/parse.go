package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Load reads the configuration file at path, parses it like Parse, and also reads the
// gossip key named by encrypt_key_file into Gossip.EncryptKey. A relative encrypt_key_file
// is taken relative to the directory holding the configuration file.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parse(path, src, filepath.Dir(path))
}

// Parse parses the HCL configuration in src on top of Default, applies the gossip profile
// to the timings not set explicitly, and validates the result. filename is used in error
// messages only; a name ending in ".json" selects HCL's JSON syntax. Parse reads no other
// file: a key given by encrypt_key_file is left for Load to read.
//
// The error, if any, holds one line per problem (joined with errors.Join), each starting
// with the file position when it is known.
func Parse(filename string, src []byte) (*Config, error) {
	return parse(filename, src, "")
}

// parse implements Parse and Load. keyDir is empty for Parse (key files are not read) and
// the configuration file's directory for Load.
func parse(filename string, src []byte, keyDir string) (*Config, error) {
	p := hclparse.NewParser()
	var file *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(filename, ".json") {
		file, diags = p.ParseJSON(src, filename)
	} else {
		file, diags = p.ParseHCL(src, filename)
	}
	if diags.HasErrors() {
		return nil, diagsError(diags)
	}

	d := &decoder{cfg: Default(), keyDir: keyDir}
	d.cfg.ranges = make(map[string]hcl.Range)
	d.decodeFile(file.Body)
	if d.diags.HasErrors() {
		return nil, diagsError(d.diags)
	}
	if err := d.cfg.Validate(); err != nil {
		return nil, err
	}
	return d.cfg, nil
}

// diagsError turns error diagnostics into one error per diagnostic, each on one line:
// hcl.Diagnostics.Error shows only the first and a count.
func diagsError(diags hcl.Diagnostics) error {
	var errs []error
	for _, diag := range diags {
		if diag.Severity != hcl.DiagError {
			continue
		}
		msg := diag.Summary
		if diag.Detail != "" {
			msg += "; " + diag.Detail
		}
		msg = strings.Join(strings.Fields(msg), " ")
		if diag.Subject != nil {
			msg = diag.Subject.String() + ": " + msg
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// decoder fills a Config from an HCL body, collecting diagnostics instead of stopping at
// the first problem.
type decoder struct {
	cfg    *Config
	keyDir string
	diags  hcl.Diagnostics
}

// Attribute and block names, by section.
var (
	nodeAttrs   = []string{"instance_id", "region", "availability_zone", "local_ipv4", "mac", "vpc_cidr", "imds_endpoint"}
	gossipAttrs = []string{"bind", "advertise", "peers", "encrypt_key", "encrypt_key_file", "insecure_plaintext",
		"profile", "probe_interval", "probe_timeout", "suspicion_mult", "gossip_interval",
		"rejoin_interval", "confirm_probes", "confirm_timeout"}
	groupAttrs = []string{"priority", "elastic_ip", "route_tables", "route_table_tags", "discover_route_tables",
		"destinations", "target", "failback", "failback_delay"}
	ec2Attrs      = []string{"region", "endpoint", "max_concurrency", "call_timeout", "reconcile_interval"}
	controlAttrs  = []string{"socket", "state_file"}
	logAttrs      = []string{"level", "format"}
	datapathAttrs = []string{"manage", "public_interface", "masquerade_source", "check_interval",
		"egress_probe", "egress_probe_timeout"}
	singleBlocks = []string{"node", "gossip", "ec2", "control", "log", "datapath"}
)

func schemaOf(attrs []string) *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, a := range attrs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: a})
	}
	return s
}

func (d *decoder) decodeFile(body hcl.Body) {
	schema := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "group", LabelNames: []string{"name"}}}}
	for _, b := range singleBlocks {
		schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: b})
	}
	content, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)

	seen := make(map[string]*hcl.Block)
	for _, block := range content.Blocks {
		if block.Type != "group" {
			if first, dup := seen[block.Type]; dup {
				d.diags = append(d.diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  fmt.Sprintf("Duplicate %s block", block.Type),
					Detail:   fmt.Sprintf("A %s block may appear only once; the first one is at %s.", block.Type, first.DefRange),
					Subject:  &block.DefRange,
				})
				continue
			}
			seen[block.Type] = block
		}
		switch block.Type {
		case "node":
			d.decodeNode(block)
		case "gossip":
			d.decodeGossip(block)
		case "group":
			d.decodeGroup(block)
		case "ec2":
			d.decodeEC2(block)
		case "control":
			d.decodeControl(block)
		case "log":
			d.decodeLog(block)
		case "datapath":
			d.decodeDatapath(block)
		}
	}
	if _, ok := seen["gossip"]; !ok {
		d.resolveGossip(section{})
	}
}

// section is one block being decoded: its attributes, the key its ranges are stored
// under and the path used in messages.
type section struct {
	d     *decoder
	attrs hcl.Attributes
	key   string // prefix of rangeKey, e.g. "gossip" or "group[0]"
	path  string // prefix shown to users, e.g. `gossip` or `group "egress"`
}

func (d *decoder) section(block *hcl.Block, attrs []string, key, path string) (section, bool) {
	content, diags := block.Body.Content(schemaOf(attrs))
	d.diags = append(d.diags, diags...)
	d.cfg.ranges[key] = block.DefRange
	if content == nil {
		return section{}, false
	}
	return section{d: d, attrs: content.Attributes, key: key, path: path}, true
}

// set reports whether the attribute was written (and not null).
func (s section) set(name string) bool {
	if s.d == nil {
		return false
	}
	_, ok := s.d.cfg.ranges[s.key+"."+name]
	return ok
}

func (s section) errorf(attr *hcl.Attribute, format string, args ...any) {
	s.d.diags = append(s.d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("%s.%s: %s", s.path, attr.Name, fmt.Sprintf(format, args...)),
		Subject:  attr.Expr.Range().Ptr(),
	})
}

// value evaluates the attribute and converts it to ty. It returns false when the attribute
// is absent, null, or wrong (the problem is then recorded).
func (s section) value(name string, ty cty.Type, want string) (cty.Value, *hcl.Attribute, bool) {
	if s.d == nil {
		return cty.NilVal, nil, false
	}
	attr, ok := s.attrs[name]
	if !ok {
		return cty.NilVal, nil, false
	}
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		s.d.diags = append(s.d.diags, diags...)
		return cty.NilVal, attr, false
	}
	if v.IsNull() {
		return cty.NilVal, attr, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil || !cv.IsWhollyKnown() {
		s.errorf(attr, "must be %s (got %s)", want, showValue(v))
		return cty.NilVal, attr, false
	}
	if cv.IsNull() {
		return cty.NilVal, attr, false
	}
	s.d.cfg.ranges[s.key+"."+name] = attr.Expr.Range()
	return cv, attr, true
}

// showValue renders a value for an error message.
func showValue(v cty.Value) string {
	switch {
	case v.IsNull():
		return "null"
	case v.Type() == cty.String:
		return strconv.Quote(v.AsString())
	case v.Type() == cty.Number:
		return v.AsBigFloat().Text('g', -1)
	case v.Type() == cty.Bool:
		return strconv.FormatBool(v.True())
	default:
		return v.Type().FriendlyName()
	}
}

func (s section) str(name string, dst *string) {
	if v, _, ok := s.value(name, cty.String, "a string"); ok {
		*dst = v.AsString()
	}
}

func (s section) boolean(name string, dst *bool) {
	if v, _, ok := s.value(name, cty.Bool, "true or false"); ok {
		*dst = v.True()
	}
}

func (s section) integer(name string, dst *int) {
	v, attr, ok := s.value(name, cty.Number, "a whole number")
	if !ok {
		return
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != 0 || i > 1<<31 || i < -(1<<31) {
		s.errorf(attr, "must be a whole number (got %s)", showValue(v))
		delete(s.d.cfg.ranges, s.key+"."+name)
		return
	}
	*dst = int(i)
}

func (s section) duration(name string, dst *time.Duration) {
	v, attr, ok := s.value(name, cty.String, `a duration such as "500ms" or "30s"`)
	if !ok {
		return
	}
	dur, err := time.ParseDuration(v.AsString())
	if err != nil {
		s.errorf(attr, `must be a duration such as "500ms" or "30s" (got %q)`, v.AsString())
		delete(s.d.cfg.ranges, s.key+"."+name)
		return
	}
	*dst = dur
}

func (s section) strList(name string, dst *[]string) {
	v, _, ok := s.value(name, cty.List(cty.String), "a list of strings")
	if !ok {
		return
	}
	out := make([]string, 0, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			out = append(out, "")
			continue
		}
		out = append(out, e.AsString())
	}
	*dst = out
}

func (s section) strMap(name string, dst *map[string]string) {
	v, _, ok := s.value(name, cty.Map(cty.String), "a map of strings")
	if !ok {
		return
	}
	out := make(map[string]string, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if e.IsNull() {
			out[k.AsString()] = ""
			continue
		}
		out[k.AsString()] = e.AsString()
	}
	*dst = out
}

func (d *decoder) decodeNode(block *hcl.Block) {
	s, ok := d.section(block, nodeAttrs, "node", "node")
	if !ok {
		return
	}
	n := &d.cfg.Node
	s.str("instance_id", &n.InstanceID)
	s.str("region", &n.Region)
	s.str("availability_zone", &n.AvailabilityZone)
	s.str("local_ipv4", &n.LocalIPv4)
	s.str("mac", &n.MAC)
	s.str("vpc_cidr", &n.VPCCIDR)
	s.str("imds_endpoint", &n.IMDSEndpoint)
}

func (d *decoder) decodeGossip(block *hcl.Block) {
	s, ok := d.section(block, gossipAttrs, "gossip", "gossip")
	if !ok {
		return
	}
	g := &d.cfg.Gossip
	s.boolean("insecure_plaintext", &g.InsecurePlaintext)
	s.str("profile", &g.Profile)
	s.duration("probe_interval", &g.ProbeInterval)
	s.duration("probe_timeout", &g.ProbeTimeout)
	s.integer("suspicion_mult", &g.SuspicionMult)
	s.duration("gossip_interval", &g.GossipInterval)
	s.duration("rejoin_interval", &g.RejoinInterval)
	s.integer("confirm_probes", &g.ConfirmProbes)
	s.duration("confirm_timeout", &g.ConfirmTimeout)

	if v, attr, ok := s.value("bind", cty.String, "a string"); ok {
		host, port, err := splitHostPort(v.AsString(), DefaultGossipPort)
		if err != nil || net.ParseIP(host) == nil {
			s.errorf(attr, "must be an IP address or IP:port (got %q)", v.AsString())
		} else {
			g.BindAddr, g.BindPort = host, port
		}
	}
	g.AdvertisePort = g.BindPort
	if v, attr, ok := s.value("advertise", cty.String, "a string"); ok && v.AsString() != "" {
		host, port, err := splitHostPort(v.AsString(), g.BindPort)
		if err != nil || net.ParseIP(host) == nil {
			s.errorf(attr, "must be an IP address or IP:port (got %q)", v.AsString())
		} else {
			g.AdvertiseAddr, g.AdvertisePort = host, port
		}
	}
	// Peers that do not parse are kept as written for Validate to report by index.
	var peers []string
	s.strList("peers", &peers)
	for i, p := range peers {
		if host, port, err := splitHostPort(p, g.BindPort); err == nil {
			peers[i] = net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
	g.Peers = peers

	keyAttr, inline := s.attrs["encrypt_key"]
	fileAttr, fromFile := s.attrs["encrypt_key_file"]
	if inline && fromFile {
		s.errorf(fileAttr, "conflicts with encrypt_key at %s; set only one", keyAttr.Expr.Range())
	}
	if v, attr, ok := s.value("encrypt_key", cty.String, "a string"); ok {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v.AsString()))
		if err != nil {
			s.errorf(attr, "must be base64, as printed by `openssl rand -base64 32` (%v)", err)
		} else {
			g.EncryptKey = key
		}
	}
	if v, attr, ok := s.value("encrypt_key_file", cty.String, "a string"); ok && v.AsString() != "" {
		g.EncryptKeyFile = v.AsString()
		if d.keyDir != "" {
			if !filepath.IsAbs(g.EncryptKeyFile) {
				g.EncryptKeyFile = filepath.Join(d.keyDir, g.EncryptKeyFile)
			}
			key, err := readKeyFile(g.EncryptKeyFile)
			if err != nil {
				s.errorf(attr, "%v", err)
			} else {
				g.EncryptKey = key
			}
		}
	}
	d.resolveGossip(s)
}

// resolveGossip applies the profile's timings to those not set explicitly. An unknown
// profile changes nothing; Validate reports it.
func (d *decoder) resolveGossip(s section) {
	g := &d.cfg.Gossip
	p, ok := profiles[g.Profile]
	if !ok {
		return
	}
	if !s.set("probe_interval") {
		g.ProbeInterval = p.ProbeInterval
	}
	if !s.set("probe_timeout") {
		g.ProbeTimeout = p.ProbeTimeout
	}
	if !s.set("suspicion_mult") {
		g.SuspicionMult = p.SuspicionMult
	}
	if !s.set("gossip_interval") {
		g.GossipInterval = p.GossipInterval
	}
}

// readKeyFile reads a file holding a base64 gossip key.
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("key file %s must hold base64, as printed by `openssl rand -base64 32` (%v)", path, err)
	}
	return key, nil
}

func (d *decoder) decodeGroup(block *hcl.Block) {
	if len(block.Labels) != 1 {
		return // HCL has reported the missing label
	}
	i := len(d.cfg.Groups)
	name := block.Labels[0]
	key := fmt.Sprintf("group[%d]", i)
	s, ok := d.section(block, groupAttrs, key, fmt.Sprintf("group %q", name))
	if !ok {
		return
	}
	d.cfg.ranges[key+".name"] = block.LabelRanges[0]
	g := DefaultGroup(name)
	s.integer("priority", &g.Priority)
	s.str("elastic_ip", &g.ElasticIP)
	s.strList("route_tables", &g.RouteTables)
	s.strMap("route_table_tags", &g.RouteTableTags)
	s.boolean("discover_route_tables", &g.DiscoverRouteTables)
	s.strList("destinations", &g.Destinations)
	s.str("target", &g.Target)
	s.str("failback", &g.Failback)
	s.duration("failback_delay", &g.FailbackDelay)
	d.cfg.Groups = append(d.cfg.Groups, g)
}

func (d *decoder) decodeEC2(block *hcl.Block) {
	s, ok := d.section(block, ec2Attrs, "ec2", "ec2")
	if !ok {
		return
	}
	e := &d.cfg.EC2
	s.str("region", &e.Region)
	s.str("endpoint", &e.Endpoint)
	s.integer("max_concurrency", &e.MaxConcurrency)
	s.duration("call_timeout", &e.CallTimeout)
	s.duration("reconcile_interval", &e.ReconcileInterval)
}

func (d *decoder) decodeControl(block *hcl.Block) {
	s, ok := d.section(block, controlAttrs, "control", "control")
	if !ok {
		return
	}
	s.str("socket", &d.cfg.Control.Socket)
	s.str("state_file", &d.cfg.Control.StateFile)
}

func (d *decoder) decodeLog(block *hcl.Block) {
	s, ok := d.section(block, logAttrs, "log", "log")
	if !ok {
		return
	}
	s.str("level", &d.cfg.Log.Level)
	s.str("format", &d.cfg.Log.Format)
}

func (d *decoder) decodeDatapath(block *hcl.Block) {
	s, ok := d.section(block, datapathAttrs, "datapath", "datapath")
	if !ok {
		return
	}
	p := &d.cfg.Datapath
	s.boolean("manage", &p.Manage)
	s.str("public_interface", &p.PublicInterface)
	s.str("masquerade_source", &p.MasqueradeSource)
	s.duration("check_interval", &p.CheckInterval)
	s.str("egress_probe", &p.EgressProbe)
	s.duration("egress_probe_timeout", &p.EgressProbeTimeout)
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port", using defPort when
// no port is given.
func splitHostPort(s string, defPort int) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("empty address")
	}
	if net.ParseIP(s) != nil {
		return s, defPort, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host := s[1 : len(s)-1]
		if net.ParseIP(host) == nil {
			return "", 0, fmt.Errorf("bad IPv6 address %q", host)
		}
		return host, defPort, nil
	}
	if !strings.Contains(s, ":") {
		return s, defPort, nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portStr)
	}
	if host == "" {
		return "", 0, errors.New("empty host")
	}
	return host, port, nil
}
