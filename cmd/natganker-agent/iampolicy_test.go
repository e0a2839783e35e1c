package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/natganker/natganker/ec2"
)

func TestIAMPolicy(t *testing.T) {
	parse := func(t *testing.T, r result) ec2.Policy {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("code %d, stderr %q", r.code, r.stderr)
		}
		var p ec2.Policy
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			t.Fatalf("stdout is not a JSON policy: %v\n%s", err, r.stdout)
		}
		if p.Version != "2012-10-17" || len(p.Statement) == 0 {
			t.Fatalf("policy %+v", p)
		}
		return p
	}
	resources := func(p ec2.Policy, sid string) string {
		for _, s := range p.Statement {
			if s.Sid == sid {
				return strings.Join(s.Resource, " ")
			}
		}
		return ""
	}

	t.Run("NamedTablesScoped", func(t *testing.T) {
		// goodConfig names its route tables and its Elastic IPs (one by allocation id, one by
		// address) and, with two groups, discovers nothing; its gossip key is inline.
		r := run(t, "iam-policy", "-config", writeFile(t, "agent.hcl", goodConfig), "-region", "eu-west-1",
			"-instance-profile", "arn:aws:iam::123456789012:instance-profile/nat")
		p := parse(t, r)
		if got, want := resources(p, "PointRoutesInNamedRouteTables"),
			"arn:aws:ec2:eu-west-1:*:route-table/rtb-0a0a0a0a arn:aws:ec2:eu-west-1:*:route-table/rtb-0a1b2c3d"; got != want {
			t.Errorf("route tables %q, want %q", got, want)
		}
		if got, want := resources(p, "MoveElasticIPs"), "arn:aws:ec2:eu-west-1:*:elastic-ip/eipalloc-0123456789abcdef0"; got != want {
			t.Errorf("elastic IPs %q, want %q", got, want)
		}
		if !strings.Contains(r.stdout, `"ec2:PublicIpAddress": [`) || !strings.Contains(r.stdout, `"198.51.100.8"`) ||
			!strings.Contains(r.stdout, `"ec2:InstanceProfile": [`) {
			t.Errorf("conditions missing:\n%s", r.stdout)
		}
		if resources(p, "PointRoutesInAnyRouteTable") != "" || r.stderr != "" {
			t.Errorf("unscoped route statement or a note: stderr %q\n%s", r.stderr, r.stdout)
		}
	})

	t.Run("ShippedExampleWithoutKeyFile", func(t *testing.T) {
		// The example names /etc/natganker/gossip.key, which need not exist where the policy
		// is made; it discovers route tables, which no ARN can name: that is said.
		r := run(t, "iam-policy", "-config", "../../examples/agent.hcl")
		p := parse(t, r)
		if resources(p, "PointRoutesInAnyRouteTable") != "arn:aws:ec2:*:*:route-table/*" {
			t.Errorf("a discovering group must be allowed every route table:\n%s", r.stdout)
		}
		if !strings.Contains(r.stderr, `Note: group "egress" discovers route tables`) || !strings.Contains(r.stderr, "-instance-profile") {
			t.Errorf("stderr %q", r.stderr)
		}
	})

	t.Run("AnyConfiguration", func(t *testing.T) {
		p := parse(t, run(t, "iam-policy"))
		if got := strings.Join(p.Actions(), " "); got != strings.Join(ec2.IAMPolicy(ec2.PolicyScope{}).Actions(), " ") {
			t.Errorf("actions %s", got)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		if r := run(t, "iam-policy", "-instance-profile", "nat"); r.code != 2 || !strings.Contains(r.stderr, "wants an ARN") {
			t.Errorf("bad profile: code %d, stderr %q", r.code, r.stderr)
		}
		if r := run(t, "iam-policy", "-config", "/nonexistent/agent.hcl"); r.code != 1 || !strings.Contains(r.stderr, "read config") || r.stdout != "" {
			t.Errorf("missing config: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		bad := writeFile(t, "agent.hcl", `group "g" { priority = 0 }`)
		if r := run(t, "iam-policy", "-config", bad); r.code != 1 || !strings.Contains(r.stderr, "invalid configuration") || r.stdout != "" {
			t.Errorf("invalid config: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}
