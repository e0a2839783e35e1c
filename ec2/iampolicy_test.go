package ec2

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestIAMPolicy_ActionsMatchCalls reads this package's source for every EC2 SDK call the
// client makes (c.api.X(…) and the X paginators) and checks that the policy allows exactly
// those actions: a call added without its permission, or a permission left behind by a call
// removed, fails here even when no test exercises the call.
func TestIAMPolicy_ActionsMatchCalls(t *testing.T) {
	srcs, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`\bc\.api\.([A-Z][A-Za-z]+)\(|ec2sdk\.New([A-Z][A-Za-z]+)Paginator\(c\.api\b`)
	var called []string
	for _, src := range srcs {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(b), -1) {
			called = append(called, "ec2:"+m[1]+m[2])
		}
	}
	called = unique(called)
	if len(called) < 8 {
		t.Fatalf("found only %v in the source: the pattern no longer matches how calls are written", called)
	}
	if got := IAMPolicy(PolicyScope{}).Actions(); !slices.Equal(got, called) {
		t.Fatalf("the policy allows %v\nthe client calls %v", got, called)
	}
}

func TestIAMPolicy_Scoping(t *testing.T) {
	tests := []struct {
		name  string
		scope PolicyScope
		// want maps each statement id to its resources and, after a "|", its condition.
		want map[string]string
	}{
		{
			name:  "AnyConfiguration",
			scope: PolicyScope{},
			want: map[string]string{
				"ReadAddressesInstancesRouteTables":         "*",
				"SourceDestCheckAndElasticIPOnNATInstances": "arn:aws:ec2:*:*:instance/*",
				"ElasticIPOntoNetworkInterfaces":            "arn:aws:ec2:*:*:network-interface/*",
				"MoveElasticIPs":                            "arn:aws:ec2:*:*:elastic-ip/*",
				"PointRoutesInAnyRouteTable":                "arn:aws:ec2:*:*:route-table/*",
			},
		},
		{
			name: "NamedAndTaggedTables",
			scope: PolicyScope{Region: "eu-west-1", InstanceProfile: "arn:aws:iam::123456789012:instance-profile/nat", Groups: []PolicyGroup{
				{Name: "az-a", ElasticIP: "eipalloc-0a", RouteTableIDs: []string{"rtb-2", "rtb-1"}},
				{Name: "az-b", ElasticIP: "203.0.113.7", RouteTableIDs: []string{"rtb-3"}, RouteTableTags: map[string]string{"natganker:group": "b", "env": "prod"}},
			}},
			want: map[string]string{
				"ReadAddressesInstancesRouteTables": "*",
				"SourceDestCheckAndElasticIPOnNATInstances": "arn:aws:ec2:eu-west-1:*:instance/*" +
					`|{"ArnEquals":{"ec2:InstanceProfile":["arn:aws:iam::123456789012:instance-profile/nat"]}}`,
				"ElasticIPOntoNetworkInterfaces": "arn:aws:ec2:eu-west-1:*:network-interface/*",
				"MoveElasticIPs":                 "arn:aws:ec2:eu-west-1:*:elastic-ip/eipalloc-0a",
				"MoveElasticIPsByAddress": "arn:aws:ec2:eu-west-1:*:elastic-ip/*" +
					`|{"StringEquals":{"ec2:PublicIpAddress":["203.0.113.7"]}}`,
				"PointRoutesInNamedRouteTables": "arn:aws:ec2:eu-west-1:*:route-table/rtb-1 arn:aws:ec2:eu-west-1:*:route-table/rtb-2 " +
					"arn:aws:ec2:eu-west-1:*:route-table/rtb-3",
				"PointRoutesInTaggedRouteTablesAzB": "arn:aws:ec2:eu-west-1:*:route-table/*" +
					`|{"StringEquals":{"ec2:ResourceTag/env":["prod"],"ec2:ResourceTag/natganker:group":["b"]}}`,
			},
		},
		{
			name: "DiscoveryAndENITargetInChina",
			scope: PolicyScope{Region: "cn-north-1", Groups: []PolicyGroup{
				{Name: "egress", ElasticIP: "eipalloc-0b", RouteTableIDs: []string{"rtb-1"}, Discover: true, TargetENI: true},
			}},
			want: map[string]string{
				"ReadAddressesInstancesRouteTables":         "*",
				"SourceDestCheckAndElasticIPOnNATInstances": "arn:aws-cn:ec2:cn-north-1:*:instance/*",
				"ElasticIPOntoNetworkInterfaces":            "arn:aws-cn:ec2:cn-north-1:*:network-interface/*",
				"MoveElasticIPs":                            "arn:aws-cn:ec2:cn-north-1:*:elastic-ip/eipalloc-0b",
				"PointRoutesInAnyRouteTable":                "arn:aws-cn:ec2:cn-north-1:*:route-table/*",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := IAMPolicy(tt.scope)
			got := map[string]string{}
			for _, s := range p.Statement {
				if s.Effect != "Allow" {
					t.Errorf("statement %s: effect %q", s.Sid, s.Effect)
				}
				if !regexp.MustCompile(`^[A-Za-z0-9]+$`).MatchString(s.Sid) {
					t.Errorf("statement id %q: IAM allows letters and digits only", s.Sid)
				}
				if _, dup := got[s.Sid]; dup {
					t.Errorf("statement id %q twice", s.Sid)
				}
				v := strings.Join(s.Resource, " ")
				if s.Condition != nil {
					b, _ := json.Marshal(s.Condition)
					v += "|" + string(b)
				}
				got[s.Sid] = v
			}
			for sid, w := range tt.want {
				if got[sid] != w {
					t.Errorf("statement %s:\n got %q\nwant %q", sid, got[sid], w)
				}
			}
			for sid := range got {
				if _, ok := tt.want[sid]; !ok {
					t.Errorf("unexpected statement %s: %s", sid, got[sid])
				}
			}
		})
	}

	t.Run("ENIOnlyGroupsDoNotAssociateWithInstances", func(t *testing.T) {
		p := IAMPolicy(PolicyScope{Groups: []PolicyGroup{{Name: "g", ElasticIP: "eipalloc-1", RouteTableIDs: []string{"rtb-1"}, TargetENI: true}}})
		for _, s := range p.Statement {
			if s.Sid == "SourceDestCheckAndElasticIPOnNATInstances" && slices.Contains(s.Action, actionAssociateAddress) {
				t.Fatalf("AssociateAddress allowed on instances though every group targets its ENI: %+v", s)
			}
		}
	})
}
