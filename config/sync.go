package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// ConntrackSync configures the replication of masqueraded flows: the owner streams its
// connection-tracking entries to the standbys, and a node that takes a group over installs
// the former owner's before it moves the Elastic IP, so that established connections go on.
type ConntrackSync struct {
	// Enabled replicates wherever the kernel has ctnetlink and the cluster has a gossip key
	// (the messages are sealed with it); the agent says so in its log when it cannot.
	Enabled bool
	// MaxFlows bounds the flows a standby holds of its peers; flows beyond it are dropped
	// and counted.
	MaxFlows int
	// FlushInterval is how long changes are batched before they are sent.
	FlushInterval time.Duration
	// ResyncInterval is how often the owner sends its whole table, repairing what was lost
	// on the way; a standby that joins gets it at once.
	ResyncInterval time.Duration
}

var defaultConntrackSync = ConntrackSync{Enabled: true, MaxFlows: 262144, FlushInterval: 100 * time.Millisecond, ResyncInterval: time.Minute}

type conntrackSyncBody struct {
	Enabled        *hcl.Attribute `hcl:"enabled,optional"`
	MaxFlows       *hcl.Attribute `hcl:"max_flows,optional"`
	FlushInterval  *hcl.Attribute `hcl:"flush_interval,optional"`
	ResyncInterval *hcl.Attribute `hcl:"resync_interval,optional"`
	Rest           hcl.Body       `hcl:",remain"`
}

func (d *decoder) conntrackSync(block *hcl.Block) {
	var b conntrackSyncBody
	s, ok := d.section(block, "conntrack_sync", "conntrack_sync", &b, &b.Rest)
	if !ok {
		return
	}
	c := &d.cfg.ConntrackSync
	s.boolean(b.Enabled, &c.Enabled)
	s.integer(b.MaxFlows, &c.MaxFlows)
	s.duration(b.FlushInterval, &c.FlushInterval)
	s.duration(b.ResyncInterval, &c.ResyncInterval)
}

func (v *checker) conntrackSync() {
	c := &v.c.ConntrackSync
	if c.MaxFlows < 1 || c.MaxFlows > 1<<22 {
		v.fail(at("conntrack_sync", "max_flows"), "must be between 1 and 4194304 (got %d)", c.MaxFlows)
	}
	if c.FlushInterval < 10*time.Millisecond || c.FlushInterval > 5*time.Second {
		v.fail(at("conntrack_sync", "flush_interval"), "must be between 10ms and 5s (got %s)", c.FlushInterval)
	}
	if c.ResyncInterval < 5*time.Second || c.ResyncInterval > time.Hour {
		v.fail(at("conntrack_sync", "resync_interval"), "must be between 5s and 1h (got %s)", c.ResyncInterval)
	}
}
