package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// IAMPolicyCommand prints the least-privilege IAM policy the agent needs.
type IAMPolicyCommand struct {
	stdout, stderr io.Writer

	config          string
	instanceProfile string
	region          string
}

// Synopsis returns a one-line description.
func (c *IAMPolicyCommand) Synopsis() string {
	return "print the least-privilege IAM policy for the agent's instance profile"
}

// Usage returns the help text.
func (c *IAMPolicyCommand) Usage() string {
	return `Usage: ` + progName + ` iam-policy [-config FILE] [-instance-profile ARN] [-region REGION]

Prints, as JSON on standard output, an IAM policy that allows exactly the EC2 actions
the agent calls, on as few resources as EC2 lets a policy name:

  ec2:DescribeAddresses, ec2:DescribeInstances, ec2:DescribeRouteTables
      on "*" (EC2 supports no resource-level permissions for them)
  ec2:DescribeInstanceAttribute, ec2:ModifyInstanceAttribute
      the source/destination check of the agent's own instance: on instances
  ec2:AssociateAddress
      moving the Elastic IP onto the agent's own instance: on instances, and on the
      groups' Elastic IPs (allocation ids, or public addresses by condition), and on
      network interfaces (target "eni", or an instance with several interfaces)
  ec2:ReplaceRoute, ec2:CreateRoute
      on the route tables the groups name, on tables carrying the groups' tags (by
      condition on ec2:ResourceTag), or on any route table when a group discovers
      its tables (discovered tables cannot be named in advance)

Without -config the policy fits any configuration: every Elastic IP and route table.
The configuration file is parsed and checked as validate does, but the gossip key file
is not read, so the command runs anywhere the file is, e.g. where the role is created.
Notes on what could not be narrowed go to standard error.

Account ids in the ARNs are "*". The region is the configuration's (ec2.region, else
node.region), else "*".

Flags:
  -config FILE            configuration to scope the policy to (default: none, any)
  -instance-profile ARN   the NAT instances' instance profile: allow the actions on
                          instances only on instances with this profile
  -region REGION          region of the ARNs (default: from the configuration, else *)

Exit status: 0 the policy was printed, 1 the configuration could not be read or is not
valid, 2 usage error.
`
}

// flags binds the command's flags to its fields.
func (c *IAMPolicyCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("iam-policy", flag.ContinueOnError)
	fs.StringVar(&c.config, "config", "", "")
	fs.StringVar(&c.instanceProfile, "instance-profile", "", "")
	fs.StringVar(&c.region, "region", "", "")
	return fs
}

// Run executes the command.
func (c *IAMPolicyCommand) Run(_ context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	if c.instanceProfile != "" && !strings.HasPrefix(c.instanceProfile, "arn:") {
		return usageErrorf("iam-policy", "-instance-profile wants an ARN (arn:aws:iam::ACCOUNT:instance-profile/NAME), got %q", c.instanceProfile)
	}
	scope := ec2.PolicyScope{Region: c.region, InstanceProfile: c.instanceProfile}
	if c.config != "" {
		src, err := os.ReadFile(c.config)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		// Parse, not Load: the policy does not depend on the gossip key, which need not be
		// where the policy is made.
		cfg, err := config.Parse(c.config, src)
		if err != nil {
			return fmt.Errorf("invalid configuration:\n%w", err)
		}
		scope.Groups = agent.PolicyGroups(cfg)
		if scope.Region == "" {
			scope.Region = cmp.Or(cfg.EC2.Region, cfg.Node.Region)
		}
		for _, g := range cfg.Groups {
			if g.DiscoverRouteTables {
				fmt.Fprintf(c.stderr, "Note: group %q discovers route tables, so ReplaceRoute and CreateRoute are allowed on every route table; set discover_route_tables = false to scope them to the named and tagged tables.\n", g.Name)
			}
		}
	}
	if c.instanceProfile == "" {
		fmt.Fprintf(c.stderr, "Note: the instance actions are allowed on every instance; give -instance-profile to allow them only on instances with the NAT instances' profile.\n")
	}
	b, err := json.MarshalIndent(ec2.IAMPolicy(scope), "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}
