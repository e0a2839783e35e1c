package ec2

import (
	"strings"
	"testing"

	"github.com/natganker/natganker/ec2/ec2test"
)

// TestClient_CheckPermissions dry-runs a takeover's calls through the proxy, which answers
// route dry runs as EC2 does, and straight against moto, which would carry them out: in no
// case does anything move.
func TestClient_CheckPermissions(t *testing.T) {
	setup := func(t *testing.T, direct bool) (*fixture, *Client, Group, Self, Observation) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		c := f.client
		if direct {
			var err error
			c, err = New(ctxT(t), Options{Endpoint: f.moto.Endpoint, Region: f.world.Region})
			if err != nil {
				t.Fatal(err)
			}
		}
		g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "g1"}}
		self := Self{InstanceID: f.inst(1)}
		obs, err := c.Observe(ctxT(t), g, self)
		if err != nil {
			t.Fatal(err)
		}
		return f, c, g, self, obs
	}
	// unchanged checks moto after the dry runs: the Elastic IP and every route where they were,
	// and no route to the dry-run destination anywhere.
	unchanged := func(t *testing.T, f *fixture) {
		t.Helper()
		if inst, _ := f.rawEIP(t); inst != f.inst(0) {
			t.Errorf("the Elastic IP moved to %q", inst)
		}
		for table, target := range f.rawRoutes(t, "0.0.0.0/0", f.world.RouteTableIDs...) {
			if target != "" && target != f.inst(0) {
				t.Errorf("route in %s moved to %q", table, target)
			}
		}
		for table, target := range f.rawRoutes(t, dryRunDestination, f.world.RouteTableIDs...) {
			if target != "" {
				t.Errorf("a %s route appeared in %s, to %s", dryRunDestination, table, target)
			}
		}
	}

	t.Run("AllAllowed", func(t *testing.T) {
		f, c, g, self, obs := setup(t, false)
		p, err := c.CheckPermissions(ctxT(t), g, self, obs)
		if err != nil {
			t.Fatal(err)
		}
		// Three tagged tables: ReplaceRoute and CreateRoute in each, and the association.
		if !p.Honoured || len(p.Checks) != 7 || len(p.Denied()) != 0 || len(p.Inconclusive()) != 0 {
			t.Fatalf("permissions = %+v", p)
		}
		// The proxy counts dry runs apart from the calls that move something.
		st := f.proxy.Stats()
		if st[ec2test.DryRunPrefix+"ReplaceRoute"] != 3 || st[ec2test.DryRunPrefix+"CreateRoute"] != 3 ||
			st[ec2test.DryRunPrefix+"AssociateAddress"] != 1 || st["ReplaceRoute"]+st["CreateRoute"]+st["AssociateAddress"] != 0 {
			t.Errorf("proxy counted %v", st)
		}
		unchanged(t, f)
	})
	for _, action := range []string{"ReplaceRoute", "CreateRoute", "AssociateAddress"} {
		t.Run("Denied"+action, func(t *testing.T) {
			f, c, g, self, obs := setup(t, false)
			f.proxy.Deny(action)
			p, err := c.CheckPermissions(ctxT(t), g, self, obs)
			if err != nil {
				t.Fatal(err)
			}
			denied := p.Denied()
			want := 3
			if action == "AssociateAddress" {
				want = 1
			}
			if !p.Honoured || len(denied) != want {
				t.Fatalf("denied = %+v, want %d of %s", denied, want, action)
			}
			for _, d := range denied {
				if d.Action != "ec2:"+action || !strings.Contains(d.Err.Error(), "UnauthorizedOperation") {
					t.Errorf("denied %+v", d)
				}
			}
			unchanged(t, f)
		})
	}
	t.Run("EndpointIgnoresDryRun", func(t *testing.T) {
		// Straight to moto: the first, harmless call is carried out and refused for the
		// missing route; no other call is made and nothing moves.
		f, c, g, self, obs := setup(t, true)
		p, err := c.CheckPermissions(ctxT(t), g, self, obs)
		if err != nil || p.Honoured || len(p.Checks) != 0 {
			t.Fatalf("permissions = %+v, %v; want nothing learnt", p, err)
		}
		unchanged(t, f)
	})
	t.Run("EC2Failing", func(t *testing.T) {
		f, c, g, self, obs := setup(t, false)
		f.proxy.FailNext(ec2test.DryRunPrefix+"ReplaceRoute", 20, "InternalError")
		if p, err := c.CheckPermissions(ctxT(t), g, self, obs); err == nil || len(p.Denied()) != 0 {
			t.Fatalf("permissions = %+v, %v; want an error and nothing denied", p, err)
		}
		unchanged(t, f)
	})
}
