package ec2

import (
	"fmt"
	"slices"
	"testing"

	"github.com/natganker/natganker/ec2/ec2test"
)

// tablesOf lists the route tables of an observation.
func tablesOf(obs Observation) []string {
	var out []string
	for _, r := range obs.Routes {
		if !slices.Contains(out, r.RouteTableID) {
			out = append(out, r.RouteTableID)
		}
	}
	return out
}

func TestClient_OtherGroups(t *testing.T) {
	// Two groups of one agent, each naming one table and discovering more: both tables route
	// via A, so discovery alone would give each group both tables.
	t.Run("DiscoveryLeavesOtherGroupsTables", func(t *testing.T) {
		spec := standardSpec()
		spec.RouteTables = []ec2test.RouteTableSpec{{Name: "t1", DefaultTo: 0}, {Name: "t2", DefaultTo: 0}, {Name: "t3", DefaultTo: -1}}
		f := newFixture(t, spec, ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		t1, t2 := f.world.RouteTableIDs[0], f.world.RouteTableIDs[1]
		members := []string{a, b}
		ga := Group{Name: "a", ElasticIP: f.world.AllocationID, RouteTableIDs: []string{t1}, DiscoverTargets: members,
			OtherGroups: []TableSelection{{Group: "b", RouteTableIDs: []string{t2}}}}
		gb := Group{Name: "b", RouteTableIDs: []string{t2}, DiscoverTargets: members,
			OtherGroups: []TableSelection{{Group: "a", RouteTableIDs: []string{t1}}}}

		for _, tc := range []struct {
			g    Group
			want string
		}{{ga, t1}, {gb, t2}} {
			obs, err := f.client.Observe(ctx, tc.g, Self{InstanceID: b})
			if err != nil {
				t.Fatal(err)
			}
			if got := tablesOf(obs); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("group %s manages %v, want [%s]", tc.g.Name, got, tc.want)
			}
			if len(obs.Problems) != 0 {
				t.Errorf("group %s problems = %q", tc.g.Name, obs.Problems)
			}
		}

		// B claims group a, reading first: table 2 is not touched.
		f.proxy.ResetStats()
		rep, err := f.client.Claim(ctx, ga, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim a: %v", err)
		}
		if got := routeActions(rep); !mapsEqual(got, map[string]string{t1: ActionReplaced}) {
			t.Errorf("claim a: route actions = %v, want only %s replaced", got, t1)
		}
		if n := f.proxy.Stats()["ReplaceRoute"] + f.proxy.Stats()["CreateRoute"]; n != 1 {
			t.Errorf("claim a: %d route calls, want 1", n)
		}
		// And from a known read, whose verification re-selects the tables.
		f.pointRoute(t, t1, a)
		known, err := f.client.Observe(ctx, ga, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		f.proxy.ResetStats()
		rep, err = f.client.Claim(ctx, ga, Self{InstanceID: b}, &known)
		if err != nil {
			t.Fatalf("claim a from known: %v", err)
		}
		if got := routeActions(rep); !mapsEqual(got, map[string]string{t1: ActionReplaced}) {
			t.Errorf("claim a from known: route actions = %v, want only %s replaced", got, t1)
		}
		if n := f.proxy.Stats()["ReplaceRoute"] + f.proxy.Stats()["CreateRoute"]; n != 1 {
			t.Errorf("claim a from known: %d route calls, want 1", n)
		}
		got := f.rawRoutes(t, DefaultDestination, t1, t2)
		if got[t1] != b || got[t2] != a {
			t.Errorf("routes after claiming a = %v, want %s via %s and %s still via %s", got, t1, b, t2, a)
		}
	})

	t.Run("DiscoveryLeavesTablesTaggedForOthers", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		a, b := f.inst(0), f.inst(1)
		rts := f.world.RouteTableIDs
		g := Group{Name: "a", DiscoverTargets: []string{a, b},
			OtherGroups: []TableSelection{{Group: "b", RouteTableTags: map[string]string{"natganker": "g2"}}, {Group: "c"}}}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		// Table 3 routes via a but carries b's tag; table 2 has no default route; group c
		// selects nothing.
		want := []string{rts[0], rts[1]}
		slices.Sort(want)
		if got := tablesOf(obs); !slices.Equal(got, want) {
			t.Errorf("discovered %v, want %v", got, want)
		}
	})

	t.Run("OverlapReported", func(t *testing.T) {
		f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
		ctx := ctxT(t)
		b := f.inst(1)
		rts := f.world.RouteTableIDs
		// Group a tags tables 0-2; group b tags table 1 by its name, group c names table 0.
		g := Group{Name: "a", RouteTableTags: map[string]string{"natganker": "g1"}, OtherGroups: []TableSelection{
			{Group: "b", RouteTableTags: map[string]string{"Name": "private-b"}},
			{Group: "c", RouteTableIDs: []string{rts[0]}},
			// Another destination through the same table is no overlap.
			{Group: "d", RouteTableIDs: []string{rts[2]}, Destinations: []string{"10.0.0.0/8"}},
		}}
		obs, err := f.client.Observe(ctx, g, Self{InstanceID: b})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{rts[0], rts[1], rts[2]}
		slices.Sort(want)
		if got := tablesOf(obs); !slices.Equal(got, want) {
			t.Errorf("group a manages %v, want %v: a table it tags stays its own", got, want)
		}
		for _, p := range []string{
			fmt.Sprintf("route table %s is selected by group %q too", rts[1], "b"),
			fmt.Sprintf("route table %s is selected by group %q too", rts[0], "c"),
		} {
			if !slices.Contains(obs.Problems, p) {
				t.Errorf("problems = %q, want %q", obs.Problems, p)
			}
		}
		if len(obs.Problems) != 2 {
			t.Errorf("problems = %q, want 2", obs.Problems)
		}
		rep, err := f.client.Claim(ctx, g, Self{InstanceID: b}, nil)
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		if len(rep.Problems) != 2 {
			t.Errorf("claim problems = %q, want the 2 overlaps", rep.Problems)
		}
	})
}
