package config

import (
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
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

func (s section) errorf(attr *hcl.Attribute, format string, args ...any) {
	s.d.problems.add(attr.Expr.Range().Ptr(), "%s.%s: %s", s.path, attr.Name, fmt.Sprintf(format, args...))
}

// value evaluates the attribute and converts it to ty. It returns false when the attribute
// is absent, null, or wrong (the problem is then recorded). A value that is set is also
// recorded in Config.ranges.
func (s section) value(attr *hcl.Attribute, ty cty.Type, want string) (cty.Value, bool) {
	if attr == nil {
		return cty.NilVal, false
	}
	if !plain(attr.Expr) {
		s.errorf(attr, "must be a plain value (a string, number, bool, list or map), not an expression")
		return cty.NilVal, false
	}
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		s.d.problems.addDiags(diags, s.path+"."+attr.Name)
		return cty.NilVal, false
	}
	if v.IsNull() {
		return cty.NilVal, false
	}
	if outOfRange(v) {
		s.errorf(attr, "a number here is too large or too small: numbers must be written with exponents between %d and %d",
			-maxExponent, maxExponent)
		return cty.NilVal, false
	}
	cv, err := convertValue(v, ty)
	if err != nil || !cv.IsWhollyKnown() {
		s.errorf(attr, "must be %s (got %s)", want, showValue(v))
		return cty.NilVal, false
	}
	if cv.IsNull() {
		return cty.NilVal, false
	}
	s.d.cfg.ranges[s.key+"."+attr.Name] = attr.Expr.Range()
	return cv, true
}

// convertValue is convert.Convert, element by element for a list or map of primitives:
// cty's conversion of a tuple to a list compares the types of every pair of elements,
// which takes half a second for 8000 strings.
func convertValue(v cty.Value, ty cty.Type) (cty.Value, error) {
	vt := v.Type()
	collection := vt.IsTupleType() || vt.IsListType() || vt.IsSetType()
	if ty.IsMapType() {
		collection = vt.IsObjectType() || vt.IsMapType()
	}
	if !(ty.IsListType() || ty.IsMapType()) || !ty.ElementType().IsPrimitiveType() || !collection {
		return convert.Convert(v, ty)
	}
	if v.LengthInt() == 0 {
		if ty.IsListType() {
			return cty.ListValEmpty(ty.ElementType()), nil
		}
		return cty.MapValEmpty(ty.ElementType()), nil
	}
	var list []cty.Value
	elems := make(map[string]cty.Value)
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		ce, err := convert.Convert(e, ty.ElementType())
		if err != nil {
			return cty.NilVal, err
		}
		if ty.IsListType() {
			list = append(list, ce)
		} else {
			elems[k.AsString()] = ce
		}
	}
	if ty.IsListType() {
		return cty.ListVal(list), nil
	}
	return cty.MapVal(elems), nil
}

// plain reports whether expr is a value written out: a string without interpolation, a
// number, a bool, null, a variable (for HCL to reject), or a list or map of those. Anything
// else is refused before it is evaluated: a configuration needs no arithmetic, and a few
// nested for expressions evaluate billions of elements. Expressions of HCL's JSON syntax
// are values already.
func plain(expr hcl.Expression) bool {
	switch e := expr.(type) {
	case *hclsyntax.LiteralValueExpr, *hclsyntax.ScopeTraversalExpr:
		return true
	case *hclsyntax.TemplateExpr:
		return plainString(e)
	case *hclsyntax.UnaryOpExpr: // a negative number
		lit, ok := e.Val.(*hclsyntax.LiteralValueExpr)
		return ok && e.Op == hclsyntax.OpNegate && lit.Val.Type() == cty.Number
	case *hclsyntax.TupleConsExpr:
		for _, elem := range e.Exprs {
			if !plain(elem) {
				return false
			}
		}
		return true
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			key, ok := item.KeyExpr.(*hclsyntax.ObjectConsKeyExpr)
			if !ok || key.ForceNonLiteral || !plain(item.ValueExpr) {
				return false
			}
			switch k := key.Wrapped.(type) {
			case *hclsyntax.ScopeTraversalExpr: // a bare name
				if len(k.Traversal) != 1 {
					return false
				}
			case *hclsyntax.TemplateExpr:
				if !plainString(k) {
					return false
				}
			default:
				return false
			}
		}
		return true
	case hclsyntax.Expression:
		return false
	default:
		return true
	}
}

// plainString reports whether a template is a string with no interpolation or directive.
func plainString(t *hclsyntax.TemplateExpr) bool {
	for _, part := range t.Parts {
		lit, ok := part.(*hclsyntax.LiteralValueExpr)
		if !ok || lit.Val.Type() != cty.String {
			return false
		}
	}
	return true
}

// maxExponent bounds the decimal exponent of numbers. Printing a number, or converting it
// to a string, takes time in proportion to its digits: 1e9999999 takes 20 seconds.
const maxExponent = 1000

// outOfRange reports whether v holds a number beyond maxExponent either way.
func outOfRange(v cty.Value) bool {
	if !v.IsKnown() || v.IsNull() {
		return false
	}
	ty := v.Type()
	switch {
	case ty == cty.Number:
		bf := v.AsBigFloat()
		if bf.IsInf() {
			return true
		}
		// bf = mant × 2^exp with 0.5 ≤ |mant| < 1; 3322 bits are about 1000 decimal digits.
		exp := bf.MantExp(nil)
		return bf.Sign() != 0 && (exp > 3322 || exp < -3322)
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType() || ty.IsMapType() || ty.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			if _, e := it.Element(); outOfRange(e) {
				return true
			}
		}
	}
	return false
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

// The converters below store a value in dst when the attribute is set and right. Each
// reports whether it stored one.

func (s section) str(attr *hcl.Attribute, dst *string) bool {
	v, ok := s.value(attr, cty.String, "a string")
	if ok {
		*dst = v.AsString()
	}
	return ok
}

func (s section) boolean(attr *hcl.Attribute, dst *bool) bool {
	v, ok := s.value(attr, cty.Bool, "true or false")
	if ok {
		*dst = v.True()
	}
	return ok
}

func (s section) integer(attr *hcl.Attribute, dst *int) bool {
	v, ok := s.value(attr, cty.Number, "a whole number")
	if !ok {
		return false
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || i > 1<<31 || i < -(1<<31) {
		s.errorf(attr, "must be a whole number (got %s)", showValue(v))
		delete(s.d.cfg.ranges, s.key+"."+attr.Name)
		return false
	}
	*dst = int(i)
	return true
}

func (s section) duration(attr *hcl.Attribute, dst *time.Duration) bool {
	v, ok := s.value(attr, cty.String, `a duration such as "500ms" or "30s"`)
	if !ok {
		return false
	}
	dur, err := time.ParseDuration(v.AsString())
	if err != nil {
		s.errorf(attr, `must be a duration such as "500ms" or "30s" (got %q)`, v.AsString())
		delete(s.d.cfg.ranges, s.key+"."+attr.Name)
		return false
	}
	*dst = dur
	return true
}

func (s section) strList(attr *hcl.Attribute, dst *[]string) bool {
	v, ok := s.value(attr, cty.List(cty.String), "a list of strings")
	if !ok {
		return false
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
	return true
}

func (s section) strMap(attr *hcl.Attribute, dst *map[string]string) bool {
	v, ok := s.value(attr, cty.Map(cty.String), "a map of strings")
	if !ok {
		return false
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
	return true
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
