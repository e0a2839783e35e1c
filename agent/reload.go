package agent

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/config"
)

// A reload (SIGHUP) applies the settings that can change while the agent runs, without a
// moment where the node's part in the cluster is undefined: each group's priority, failback
// and failback_delay (the new values are gossiped at once and every member decides with
// them), the log level and the hooks. Every other setting is bound to something built at
// start (the gossip listener and keys, the EC2 client, the group's Elastic IP and route
// tables, the datapath, the control socket): a change to one of them is refused, named in the
// result, and the running value stays until a restart.

// ReloadResult says what a reload changed and what it left for a restart.
type ReloadResult struct {
	// Applied lists each setting changed, as `group "egress".priority: 100 → 300`.
	Applied []string
	// NeedRestart names each setting whose new value only a restart applies, as the
	// configuration file calls it (`gossip.probe_interval`, `group "egress".elastic_ip`).
	NeedRestart []string
}

// reloaded is what reloads changed outside the groups; the run goroutine owns it.
type reloaded struct {
	logLevel string
	hooks    *config.Hooks
}

// HooksReloader is the hook runner, whose hooks a reload replaces. Reload calls it on the run
// goroutine.
type HooksReloader interface {
	ReloadHooks(h config.Hooks)
}

// Reload applies what can change safely from next, a validated configuration, and reports
// the rest. It logs one line for what it applied and one naming every setting that needs a
// restart.
func (a *Agent) Reload(ctx context.Context, next *config.Config) (ReloadResult, error) {
	var res ReloadResult
	err := a.do(ctx, func() {
		cur := a.current()
		for _, c := range configChanges(cur, next) {
			if !reloadable(c.name, a.deps.Hooks != nil) {
				res.NeedRestart = append(res.NeedRestart, c.name)
				continue
			}
			res.Applied = append(res.Applied, c.String())
		}
		for _, g := range a.groups {
			n, ok := next.Group(g.cfg.Name)
			if !ok {
				continue
			}
			g.cfg.Priority, g.cfg.Failback, g.cfg.FailbackDelay = n.Priority, n.Failback, n.FailbackDelay
		}
		if l := hclog.LevelFromString(next.Log.Level); l != hclog.NoLevel && next.Log.Level != cur.Log.Level {
			// Loggers derived from one root share its level: this sets every logger of
			// the process.
			a.logger.SetLevel(l)
			a.reloaded.logLevel = next.Log.Level
		}
		if a.deps.Hooks != nil && !reflect.DeepEqual(cur.Hooks, next.Hooks) {
			a.deps.Hooks.ReloadHooks(next.Hooks)
			hooks := next.Hooks
			a.reloaded.hooks = &hooks
		}
		a.publish()
	})
	if err != nil {
		return res, err
	}
	switch {
	case len(res.Applied) > 0:
		a.logger.Info("configuration reloaded", "changed", res.Applied)
	case len(res.NeedRestart) == 0:
		a.logger.Info("configuration reloaded: nothing changed")
	}
	if len(res.NeedRestart) > 0 {
		a.logger.Warn("configuration reloaded, but these settings changed and only a restart applies them: they keep their running values",
			"settings", res.NeedRestart)
	}
	return res, nil
}

// current is the configuration the agent runs with now: the one it started with, with what
// reloads applied. It runs on the run goroutine.
func (a *Agent) current() *config.Config {
	c := *a.cfg
	c.Groups = nil
	for _, g := range a.groups {
		c.Groups = append(c.Groups, g.cfg)
	}
	if a.reloaded.logLevel != "" {
		c.Log.Level = a.reloaded.logLevel
	}
	if a.reloaded.hooks != nil {
		c.Hooks = *a.reloaded.hooks
	}
	return &c
}

// reloadable reports whether the setting named name can change while the agent runs; hooks
// only when a hook runner takes new ones.
func reloadable(name string, hooks bool) bool {
	if strings.HasPrefix(name, "group ") {
		_, attr, _ := strings.Cut(strings.TrimPrefix(name, "group "), ".")
		return slices.Contains([]string{"priority", "failback", "failback_delay"}, attr)
	}
	if strings.HasPrefix(name, "hooks.") {
		return hooks
	}
	return name == "log.level"
}

// settingChange is one setting whose value differs between two configurations.
type settingChange struct {
	name     string
	old, new string
}

func (c settingChange) String() string {
	if c.old == "" && c.new == "" {
		return c.name
	}
	return fmt.Sprintf("%s: %s → %s", c.name, c.old, c.new)
}

// configChanges lists every setting that differs between cur and next, named as the
// configuration file names it. A group added or removed is one change named after the group.
// Secrets are named, never shown.
func configChanges(cur, next *config.Config) []settingChange {
	var out []settingChange
	cv, nv := reflect.ValueOf(*cur), reflect.ValueOf(*next)
	t := cv.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Name == "Groups" {
			out = append(out, groupChanges(cur.Groups, next.Groups)...)
			continue
		}
		out = append(out, fieldChanges(snake(f.Name), cv.Field(i), nv.Field(i))...)
	}
	return out
}

func groupChanges(cur, next []config.Group) []settingChange {
	var out []settingChange
	byName := func(gs []config.Group, name string) (config.Group, bool) {
		for _, g := range gs {
			if g.Name == name {
				return g, true
			}
		}
		return config.Group{}, false
	}
	for _, c := range cur {
		n, ok := byName(next, c.Name)
		if !ok {
			out = append(out, settingChange{name: fmt.Sprintf("group %q (removed)", c.Name)})
			continue
		}
		out = append(out, fieldChanges(fmt.Sprintf("group %q", c.Name), reflect.ValueOf(c), reflect.ValueOf(n))...)
	}
	for _, n := range next {
		if _, ok := byName(cur, n.Name); !ok {
			out = append(out, settingChange{name: fmt.Sprintf("group %q (added)", n.Name)})
		}
	}
	return out
}

// fieldChanges compares the fields of two structs of one type, or two values, under prefix.
func fieldChanges(prefix string, cv, nv reflect.Value) []settingChange {
	if cv.Kind() != reflect.Struct {
		if reflect.DeepEqual(cv.Interface(), nv.Interface()) {
			return nil
		}
		return []settingChange{{name: prefix, old: show(prefix, cv), new: show(prefix, nv)}}
	}
	var out []settingChange
	t := cv.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || (strings.HasPrefix(prefix, "group ") && f.Name == "Name") {
			continue
		}
		name := prefix + "." + attrName(f.Name)
		if n := len(out); n > 0 && out[n-1].name == name {
			// Two fields of one attribute (bind's address and port): one change.
			if !reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
				out[n-1].old, out[n-1].new = "", ""
			}
			continue
		}
		out = append(out, fieldChanges(name, cv.Field(i), nv.Field(i))...)
	}
	return out
}

// show renders a value for the log; keys are never shown.
func show(name string, v reflect.Value) string {
	if strings.Contains(name, "encrypt_key") {
		return ""
	}
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	if s, ok := v.Interface().(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v.Interface())
}

// attrNames are the configuration file's names for fields whose Go name does not turn into
// it by snake case.
var attrNames = map[string]string{
	"BindAddr": "bind", "BindPort": "bind", "AdvertiseAddr": "advertise", "AdvertisePort": "advertise",
	"OtherKeys": "encrypt_key_file", "EncryptKey": "encrypt_key", "LocalIPv4": "local_ipv4",
	"IMDSEndpoint": "imds_endpoint", "VPCCIDR": "vpc_cidr", "InstanceID": "instance_id", "MAC": "mac",
	"ASGTerminated": "asg_terminated", "ElasticIP": "elastic_ip",
}

func attrName(field string) string {
	if n, ok := attrNames[field]; ok {
		return n
	}
	return snake(field)
}

// snake turns a Go field name into the configuration's style: ProbeInterval → probe_interval.
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
