package agent

import (
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// PolicyGroups is what the IAM policy (ec2.IAMPolicy) needs to know of cfg's groups: the
// Elastic IPs, route tables and targets the agent acts on.
func PolicyGroups(cfg *config.Config) []ec2.PolicyGroup {
	var out []ec2.PolicyGroup
	for _, g := range cfg.Groups {
		out = append(out, ec2.PolicyGroup{
			Name:           g.Name,
			ElasticIP:      g.ElasticIP,
			RouteTableIDs:  g.RouteTables,
			RouteTableTags: g.RouteTableTags,
			Discover:       g.DiscoverRouteTables,
			TargetENI:      g.Target == config.TargetENI,
		})
	}
	return out
}
