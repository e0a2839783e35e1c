package config

import (
	"strings"
	"testing"
)

// TestParse_UnknownPath checks that a misspelled or unknown key names the block it is in,
// in every block, and suggests the name it was probably meant to be.
func TestParse_UnknownPath(t *testing.T) {
	// block wraps body in a block of minimal; body's first line is line 10.
	block := func(name, body string) string {
		return minimal + name + " {\n" + body + "\n}\n"
	}
	tests := []struct {
		name string
		src  string
		want string // the whole line
	}{
		{
			name: "Group", // the example of the problem report
			src:  "\ngroup \"egress\" {\n  priorty = 100\n  elastic_ip = \"eipalloc-0123\"\n}\ngossip {\n  insecure_plaintext = true\n}\n",
			want: `agent.hcl:3,3-10: group "egress": unknown attribute "priorty" (did you mean "priority"?)`,
		},
		{
			name: "Gossip",
			src:  strings.Replace(minimal, "insecure_plaintext = true", "insecure_plaintext = true\n  bnd = \"0.0.0.0\"", 1),
			want: `agent.hcl:4,3-6: gossip: unknown attribute "bnd" (did you mean "bind"?)`,
		},
		{"Node", block("node", `  instanceid = "i-1"`), `agent.hcl:10,3-13: node: unknown attribute "instanceid" (did you mean "instance_id"?)`},
		{"EC2", block("ec2", `  regoin = "us-east-1"`), `agent.hcl:10,3-9: ec2: unknown attribute "regoin" (did you mean "region"?)`},
		{"Control", block("control", `  sockt = "/run/a.sock"`), `agent.hcl:10,3-8: control: unknown attribute "sockt" (did you mean "socket"?)`},
		{"Log", block("log", `  levle = "info"`), `agent.hcl:10,3-8: log: unknown attribute "levle" (did you mean "level"?)`},
		{"Datapath", block("datapath", `  manag = true`), `agent.hcl:10,3-8: datapath: unknown attribute "manag" (did you mean "manage"?)`},
		{
			name: "NoSuggestion",
			src:  block("control", `  path = "/run/a.sock"`),
			want: `agent.hcl:10,3-7: control: unknown attribute "path" (expected one of "socket", "state_file")`,
		},
		{
			name: "BlockInBlock",
			src:  block("node", "  imds {\n  }"),
			want: `agent.hcl:10,3-7: node: unknown block "imds" (no blocks are expected here)`,
		},
		{
			name: "MisspelledBlock",
			src:  minimal + "gosip {\n}\n",
			want: `agent.hcl:9,1-6: unknown block "gosip" (did you mean "gossip"?)`,
		},
		{
			name: "BlockAsAttribute",
			src:  minimal + "log = {\n  level = \"info\"\n}\n",
			want: `agent.hcl:9,1-4: "log" is a block, not an attribute: write log { … }`,
		},
		{
			name: "AttributeAsBlock",
			src:  strings.Replace(minimal, "priority   = 100", "priority {\n  }", 1),
			want: `agent.hcl:6,3-11: group "egress": "priority" is an attribute, not a block: write priority = …`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines := parseErr(t, tc.src)
			for _, l := range lines {
				if l == tc.want {
					return
				}
			}
			t.Errorf("error lines:\n%s\nwant the line:\n%s", strings.Join(lines, "\n"), tc.want)
		})
	}
}

func TestParse_UnknownPathJSON(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{
			name: "Group",
			src:  `{"gossip": {"insecure_plaintext": true}, "group": {"egress": {"priorty": 1, "elastic_ip": "eipalloc-0123"}}}`,
			want: `agent.json:1,63-72: group "egress": unknown attribute "priorty" (did you mean "priority"?)`,
		},
		{
			name: "TopLevel",
			src:  `{"gossp": {"insecure_plaintext": true}}`,
			want: `agent.json:1,2-9: unknown block "gossp" (did you mean "gossip"?)`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("agent.json", []byte(tc.src))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !hasLine(strings.Split(err.Error(), "\n"), tc.want) {
				t.Errorf("error:\n%v\nwant a line:\n%s", err, tc.want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"priority", "priority", 0},
		{"priorty", "priority", 1},
		{"levle", "level", 2},
		{"weight", "priority", 3}, // limit
		{"", "abc", 3},
		{"a-very-long-unknown-name", "bind", 3},
	}
	for _, tc := range tests {
		if got := editDistance(tc.a, tc.b, 3); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
