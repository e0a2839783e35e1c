package agent

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/gossip"
)

func TestConfigChanges(t *testing.T) {
	base := func() *config.Config {
		c := loopConfig(100, 30*time.Second)
		c.Gossip.EncryptKey = []byte("0123456789abcdef")
		return c
	}
	tests := []struct {
		name        string
		change      func(c *config.Config)
		want        []string
		needRestart bool
	}{
		{"Nothing", func(c *config.Config) {}, nil, false},
		{"Priority", func(c *config.Config) { c.Groups[0].Priority = 300 }, []string{`group "egress".priority: 100 → 300`}, false},
		{"Failback", func(c *config.Config) { c.Groups[0].Failback = config.FailbackManual }, []string{`group "egress".failback: "auto" → "manual"`}, false},
		{"FailbackDelay", func(c *config.Config) { c.Groups[0].FailbackDelay = time.Minute }, []string{`group "egress".failback_delay: 30s → 1m0s`}, false},
		{"LogLevel", func(c *config.Config) { c.Log.Level = "debug" }, []string{`log.level: "info" → "debug"`}, false},
		{"ProbeInterval", func(c *config.Config) { c.Gossip.ProbeInterval = time.Second }, []string{"gossip.probe_interval: 200ms → 1s"}, true},
		{"BindPort", func(c *config.Config) { c.Gossip.BindPort = 7000 }, []string{"gossip.bind: 7946 → 7000"}, true},
		{"BindBoth", func(c *config.Config) { c.Gossip.BindAddr, c.Gossip.BindPort = "10.0.0.1", 7000 }, []string{"gossip.bind"}, true},
		{"Key", func(c *config.Config) { c.Gossip.EncryptKey = []byte("fedcba9876543210") }, []string{"gossip.encrypt_key"}, true},
		{"ElasticIP", func(c *config.Config) { c.Groups[0].ElasticIP = "eipalloc-2" }, []string{`group "egress".elastic_ip: "eipalloc-1" → "eipalloc-2"`}, true},
		{"RouteTables", func(c *config.Config) { c.Groups[0].RouteTables = []string{"rtb-9"} }, []string{`group "egress".route_tables: [] → [rtb-9]`}, true},
		{"GroupAdded", func(c *config.Config) {
			g := config.DefaultGroup("az-b")
			c.Groups = append(c.Groups, g)
		}, []string{`group "az-b" (added)`}, true},
		{"Reconcile", func(c *config.Config) { c.EC2.ReconcileInterval = time.Second }, []string{"ec2.reconcile_interval: 1h0m0s → 1s"}, true},
		{"IMDS", func(c *config.Config) { c.Node.IMDSEndpoint = "http://127.0.0.1:1" }, []string{`node.imds_endpoint: "" → "http://127.0.0.1:1"`}, true},
		{"Handoff", func(c *config.Config) { c.Handoff.Rebalance = true }, []string{"handoff.rebalance: false → true"}, true},
		{"Hooks", func(c *config.Config) { c.Hooks.OnAcquire = []string{"/bin/true"} }, []string{"hooks.on_acquire: [] → [/bin/true]"}, false},
		{"Telemetry", func(c *config.Config) { c.Telemetry.PrometheusListen = "127.0.0.1:9720" }, []string{`telemetry.prometheus_listen: "" → "127.0.0.1:9720"`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur, next := base(), base()
			tt.change(next)
			var got []string
			restart := false
			for _, c := range configChanges(cur, next) {
				got = append(got, c.String())
				restart = restart || !reloadable(c.name, true)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("changes = %q, want %q", got, tt.want)
			}
			if restart != tt.needRestart {
				t.Errorf("needs a restart = %v, want %v", restart, tt.needRestart)
			}
		})
	}
	t.Run("HooksWithoutRunner", func(t *testing.T) {
		if reloadable("hooks.on_acquire", false) {
			t.Errorf("hooks reloadable with no hook runner to take them")
		}
	})
	t.Run("KeyNeverShown", func(t *testing.T) {
		cur, next := base(), base()
		next.Gossip.EncryptKey = []byte("fedcba9876543210")
		for _, c := range configChanges(cur, next) {
			if strings.Contains(c.String(), "fedcba") || strings.Contains(c.String(), "0123") {
				t.Errorf("a key is shown: %s", c)
			}
		}
	})
}

// TestConfigChanges_EveryField: every setting of a configuration is compared, so that a
// setting added later needs a restart unless it is made reloadable on purpose.
func TestConfigChanges_EveryField(t *testing.T) {
	var walk func(prefix string, v reflect.Value)
	n := 0
	cur := loopConfig(100, 30*time.Second)
	walk = func(prefix string, v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			f, fv := v.Type().Field(i), v.Field(i)
			if !f.IsExported() {
				continue
			}
			if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Duration(0)) {
				walk(prefix+"."+f.Name, fv)
				continue
			}
			if f.Name == "Groups" || f.Name == "Name" {
				continue
			}
			n++
			next := loopConfig(100, 30*time.Second)
			// Change this one field in next, whatever its kind.
			target := reflect.ValueOf(next).Elem()
			for _, p := range strings.Split(strings.TrimPrefix(prefix+"."+f.Name, "."), ".") {
				target = target.FieldByName(p)
			}
			switch target.Kind() {
			case reflect.String:
				target.SetString(target.String() + "x")
			case reflect.Bool:
				target.SetBool(!target.Bool())
			case reflect.Int, reflect.Int64:
				target.SetInt(target.Int() + 1)
			case reflect.Slice:
				target.Set(reflect.Append(reflect.MakeSlice(target.Type(), 0, 1), reflect.New(target.Type().Elem()).Elem()))
			case reflect.Map:
				target.Set(reflect.MakeMap(target.Type()))
				target.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf("v"))
			default:
				t.Fatalf("%s%s: kind %s not covered by this test", prefix, f.Name, target.Kind())
			}
			if got := configChanges(cur, next); len(got) != 1 {
				t.Errorf("changing %s.%s gives %v, want one change", prefix, f.Name, got)
			}
		}
	}
	walk("", reflect.ValueOf(*cur))
	if n < 40 {
		t.Errorf("only %d settings walked", n)
	}
}

// TestReload_Loop: a reload raises this node's priority above the owner's; the node gossips
// it at once and, the failback delay later, takes the group. A changed probe interval is
// refused and named.
func TestReload_Loop(t *testing.T) {
	noLeak(t)
	cloud := newFakeCloud("i-b", "rtb-1")
	cfg := loopConfig(100, 50*time.Millisecond)
	l := startLoopWith(t, "i-a", cfg, cloud, func(d *Deps) {})
	l.gossip.peer("i-b", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-b" })
	if n := l.claimsStarted(t); n != 0 {
		t.Fatalf("the lower priority claimed")
	}

	next := loopConfig(300, 50*time.Millisecond)
	next.Gossip.ProbeInterval = time.Second
	next.Log.Level = "debug"
	res, err := l.Reload(context.Background(), next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Applied, `group "egress".priority: 100 → 300`) || !slices.Equal(res.NeedRestart, []string{"gossip.probe_interval"}) {
		t.Errorf("reload = %+v", res)
	}
	if !l.logged(`only a restart applies them: they keep their running values: settings=["gossip.probe_interval"]`) {
		t.Errorf("no clear line naming the refused setting:\n%s", l.log.String())
	}
	waitFor(t, "the new priority in gossip", func() bool {
		var p int
		l.gossip.set(func(g *fakeGossip) { p = g.meta.Groups["egress"].Priority })
		return p == 300
	})
	waitFor(t, "the failback to this node", func() bool { return cloud.allOn("i-a") })

	// A second reload of the same file changes nothing and refuses the same setting again.
	res, err = l.Reload(context.Background(), next)
	if err != nil || len(res.Applied) != 0 || !slices.Equal(res.NeedRestart, []string{"gossip.probe_interval"}) {
		t.Errorf("second reload = %+v, %v", res, err)
	}
}

// TestCluster_ReloadPriority: two real agents on moto. A reload raises the backup's priority
// above the owner's: the owner sees the new priority over gossip, and the backup takes the
// group after its failback delay, as it would have with that priority from the start.
func TestCluster_ReloadPriority(t *testing.T) {
	c := newCluster(t, 200, 100)
	ag := c.up()
	a, b := ag[0], ag[1]
	c.waitOwner(0, 10*time.Second)

	c.prios[1] = 300
	res, err := b.Reload(context.Background(), c.config(1))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Applied, []string{`group "egress".priority: 100 → 300`}) || len(res.NeedRestart) != 0 {
		t.Fatalf("reload = %+v", res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms, err := a.Members(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 2 && len(ms[1].Groups) == 1 && ms[1].Groups[0].Priority == 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nat1 never saw nat2's new priority: %+v", ms)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := c.waitOwner(1, 15*time.Second)
	t.Logf("reload → nat2 owns the group after %v (failback_delay %v)", took.Round(time.Millisecond), c.delay)
}
