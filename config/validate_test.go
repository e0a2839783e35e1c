package config

import (
	"fmt"
	"strings"
	"testing"
)

// twoGroups is a file with groups "a" and "b" (headers on lines 4 and 8); each group's
// extra attributes are on the line after elastic_ip (lines 7 and 11).
func twoGroups(a, b string) string {
	return fmt.Sprintf(`gossip {
  insecure_plaintext = true
}
group "a" {
  priority   = 100
  elastic_ip = "eipalloc-0a"
  %s
}
group "b" {
  priority   = 50
  elastic_ip = "eipalloc-0b"
  %s
}
`, a, b)
}

func TestValidate_SharedRouteTables(t *testing.T) {
	bad := []struct {
		name string
		a, b string
		want string // the whole line
	}{
		{
			name: "SameTableSameDestination",
			a:    `route_tables = ["rtb-01", "rtb-02"]`,
			b:    `route_tables = ["rtb-03", "rtb-02"]`,
			want: `agent.hcl:12,18-38: group "b".route_tables: route 0.0.0.0/0 in rtb-02 is already managed by group "a" (got "rtb-02")`,
		},
		{
			name: "SameTableOverlappingDestinations",
			a:    "route_tables = [\"rtb-01\"]\n  destinations = [\"10.0.0.0/8\", \"0.0.0.0/0\"]",
			b:    "route_tables = [\"rtb-01\"]\n  destinations = [\"192.168.0.0/16\", \"0.0.0.0/0\"]",
			want: `agent.hcl:13,18-28: group "b".route_tables: route 0.0.0.0/0 in rtb-01 is already managed by group "a" (got "rtb-01")`,
		},
		{
			name: "SameTags",
			a:    `route_table_tags = { "natganker:group" = "egress" }`,
			b:    `route_table_tags = { "natganker:group" = "egress" }`,
			want: `agent.hcl:12,22-54: group "b".route_table_tags: same tags as group "a": both groups would manage the route for 0.0.0.0/0 in the same tables; give each group tags that only its own tables carry (got {"natganker:group" = "egress"})`,
		},
		{
			name: "TagsIncludeTheOthers",
			a:    `route_table_tags = { env = "prod" }`,
			b:    `route_table_tags = { env = "prod", az = "a" }`,
			want: `agent.hcl:12,22-48: group "b".route_table_tags: every route table with these tags also has the tags of group "a" {"env" = "prod"}: both groups would manage the route for 0.0.0.0/0 in the same tables; give each group tags that only its own tables carry (got {"az" = "a", "env" = "prod"})`,
		},
		{
			name: "TagsIncludedInTheOthers",
			a:    `route_table_tags = { env = "prod", az = "a" }`,
			b:    `route_table_tags = { env = "prod" }`,
			want: `agent.hcl:12,22-38: group "b".route_table_tags: every route table with the tags of group "a" {"az" = "a", "env" = "prod"} also has these: both groups would manage the route for 0.0.0.0/0 in the same tables; give each group tags that only its own tables carry (got {"env" = "prod"})`,
		},
		{
			name: "BothDiscover",
			a:    `discover_route_tables = true`,
			b:    `discover_route_tables = true`,
			want: `agent.hcl:12,27-31: group "b".discover_route_tables: only one group may discover route tables (group "a" does too): name the tables with route_tables or tag them with route_table_tags`,
		},
		{
			name: "NoTablesWithSeveralGroups",
			a:    `route_tables = ["rtb-01"]`,
			b:    ``,
			want: `agent.hcl:9,1-10: group "b".route_tables: no route table would be managed: set route_tables or route_table_tags (with several groups, discover_route_tables is false unless set)`,
		},
		{
			name: "NoTablesDiscoveryOff",
			a:    `route_tables = ["rtb-01"]`,
			b:    `discover_route_tables = false`,
			want: `agent.hcl:12,27-32: group "b".discover_route_tables: no route table would be managed: set route_tables, route_table_tags or discover_route_tables = true (got false)`,
		},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			lines := parseErr(t, twoGroups(tc.a, tc.b))
			if len(lines) != 1 || lines[0] != tc.want {
				t.Errorf("error lines:\n%s\nwant only:\n%s", strings.Join(lines, "\n"), tc.want)
			}
		})
	}

	good := []struct {
		name string
		a, b string
	}{
		{"SameTableOtherDestinations", "route_tables = [\"rtb-01\"]", "route_tables = [\"rtb-01\"]\n  destinations = [\"203.0.113.0/24\"]"},
		{"SameTagsOtherDestinations", "route_table_tags = { env = \"prod\" }", "route_table_tags = { env = \"prod\" }\n  destinations = [\"203.0.113.0/24\"]"},
		{"DifferentTags", `route_table_tags = { az = "a" }`, `route_table_tags = { az = "b" }`},
		{"OneDiscovers", `discover_route_tables = true`, `route_tables = ["rtb-01"]`},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			mustParse(t, twoGroups(tc.a, tc.b))
		})
	}
}

func TestParse_DiscoveryDefault(t *testing.T) {
	discovers := func(c *Config) []bool {
		var d []bool
		for _, g := range c.Groups {
			d = append(d, g.DiscoverRouteTables)
		}
		return d
	}
	tests := []struct {
		name string
		src  string
		want []bool
	}{
		{"OneGroup", minimal, []bool{true}},
		{"OneGroupWithTables", withTables(minimal, "rtb-01"), []bool{true}},
		{"SeveralGroups", twoGroups(`route_tables = ["rtb-01"]`, `route_table_tags = { az = "b" }`), []bool{false, false}},
		{"SeveralGroupsOneSet", twoGroups(`route_tables = ["rtb-01"]`, `discover_route_tables = true`), []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := discovers(mustParse(t, tc.src)); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("discover_route_tables = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidate_SeveralGroupsBuiltInCode(t *testing.T) {
	// DefaultGroup discovers, as a single group does: two of them must say which tables
	// are theirs.
	c := Default()
	c.Gossip.InsecurePlaintext = true
	for i, name := range []string{"a", "b", "c"} {
		g := DefaultGroup(name)
		g.Priority, g.ElasticIP = 10, fmt.Sprintf("eipalloc-0%d", i)
		c.Groups = append(c.Groups, g)
	}
	err := c.Validate()
	want := `group "b".discover_route_tables: only one group may discover route tables (group "a" does too): name the tables with route_tables or tag them with route_table_tags
group "c".discover_route_tables: only one group may discover route tables (group "a" does too): name the tables with route_tables or tag them with route_table_tags`
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant:\n%s", err, want)
	}
	c.Groups[1].DiscoverRouteTables = false
	c.Groups[2].DiscoverRouteTables = false
	c.Groups[2].RouteTables = []string{"rtb-01"}
	err = c.Validate()
	want = `group "b".route_tables: no route table would be managed: set route_tables or route_table_tags (with several groups, discover_route_tables is false unless set)`
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant:\n%s", err, want)
	}
}

func TestValidate_TooManyGroups(t *testing.T) {
	c := Default()
	c.Gossip.InsecurePlaintext = true
	for i := range maxGroups + 1 {
		g := DefaultGroup(fmt.Sprintf("g%d", i))
		g.Priority, g.ElasticIP = 10, fmt.Sprintf("eipalloc-%x", i)
		g.DiscoverRouteTables = false
		g.RouteTables = []string{fmt.Sprintf("rtb-%x", i)}
		c.Groups = append(c.Groups, g)
	}
	err := c.Validate()
	if want := `group "g64": too many groups: at most 64 may be configured (got 65)`; err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %q", err, want)
	}
	c.Groups = c.Groups[:maxGroups]
	if err := c.Validate(); err != nil {
		t.Errorf("Validate of %d groups: %v", maxGroups, err)
	}
}
