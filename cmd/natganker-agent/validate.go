package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// defaultConfig is the configuration file run and validate read unless told otherwise.
const defaultConfig = "/etc/natganker/agent.hcl"

// ValidateCommand checks a configuration file, and optionally what EC2 says about it.
type ValidateCommand struct {
	stdout, stderr io.Writer

	config string
	remote bool
}

// Synopsis returns a one-line description.
func (c *ValidateCommand) Synopsis() string {
	return "check a configuration file (and, with -remote, its groups in EC2)"
}

// Usage returns the help text.
func (c *ValidateCommand) Usage() string {
	return `Usage: ` + progName + ` validate [-config FILE] [-remote]

Parses and checks the configuration file without starting anything, and prints
"config OK" with the groups it defines, or every problem found with its position in
the file. The gossip key file named by encrypt_key_file is read too. A gossip key that
users other than its owner can read or write (in the key file, or in the configuration
file itself) is reported as a warning, with the chmod that fixes it; it does not change
the exit status.

With -remote it also asks the instance metadata service who this instance is and reads,
for each group, who holds the Elastic IP and where each managed route points, exactly
as the agent would (this needs the agent's EC2 permissions). Missing Elastic IPs or
route tables are reported as problems. Nothing is changed in EC2.

Flags:
  -config FILE   configuration file (default ` + defaultConfig + `)
  -remote        also read the groups' Elastic IPs and route tables from EC2

Exit status: 0 the configuration is valid (and, with -remote, EC2 could be read and
reported no problem), 1 it is not, 2 usage error.
`
}

// flags binds the command's flags to its fields.
func (c *ValidateCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.StringVar(&c.config, "config", defaultConfig, "")
	fs.BoolVar(&c.remote, "remote", false, "")
	return fs
}

// Run executes the command.
func (c *ValidateCommand) Run(ctx context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	cfg, err := config.Load(c.config)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	// Warnings do not change the exit status: the agent would run with this file.
	for _, w := range config.KeyFileWarnings(cfg) {
		fmt.Fprintf(c.stderr, "Warning: %s\n", w)
	}
	fmt.Fprintf(c.stdout, "config OK: %s\n", describeConfig(cfg))
	if !c.remote {
		return nil
	}
	return c.checkRemote(ctx, cfg)
}

// describeConfig summarizes cfg in one line.
func describeConfig(cfg *config.Config) string {
	var gs []string
	for _, g := range cfg.Groups {
		gs = append(gs, fmt.Sprintf("%s priority %d", g.Name, g.Priority))
	}
	return fmt.Sprintf("%s (%s), %s, control socket %s",
		plural(len(cfg.Groups), "group"), strings.Join(gs, ", "), plural(len(cfg.Gossip.Peers), "gossip peer"), cfg.Control.Socket)
}

// checkRemote observes every group in EC2 and prints what it finds.
func (c *ValidateCommand) checkRemote(ctx context.Context, cfg *config.Config) error {
	logger := hclog.New(&hclog.LoggerOptions{Name: progName, Output: c.stderr, Level: hclog.Warn})
	id, err := ec2.LoadIdentity(ctx, cfg.Node.IMDSEndpoint, identityOverride(cfg.Node))
	if err != nil {
		return fmt.Errorf("remote check: %w", err)
	}
	region := cfg.EC2.Region
	if region == "" {
		region = id.Region
	}
	client, err := ec2.New(ctx, ec2.Options{
		Region:         region,
		Endpoint:       cfg.EC2.Endpoint,
		MaxConcurrency: cfg.EC2.MaxConcurrency,
		CallTimeout:    cfg.EC2.CallTimeout,
		Logger:         logger,
	})
	if err != nil {
		return fmt.Errorf("remote check: %w", err)
	}
	fmt.Fprintf(c.stdout, "instance %s in %s (%s), VPC %s\n", id.InstanceID, region, orNone(id.AvailabilityZone), orNone(id.VPCCIDR))
	// Route table discovery can only look for routes through this instance here: the other
	// members' instance ids are learnt by gossip.
	var failed []string
	for _, g := range cfg.Groups {
		self := ec2.Self{InstanceID: id.InstanceID, TargetENI: g.Target == config.TargetENI}
		obs, err := client.Observe(ctx, agent.GroupSpec(cfg, g, []string{id.InstanceID}), self)
		fmt.Fprintf(c.stdout, "\ngroup %s\n", g.Name)
		if err != nil {
			fmt.Fprintf(c.stdout, "  error: %v\n", err)
			failed = append(failed, g.Name)
			continue
		}
		writeObservation(c.stdout, obs, id.InstanceID)
		if len(obs.Problems) > 0 {
			failed = append(failed, g.Name)
		}
		// Several groups: each Elastic IP needs a private address of its own here.
		if why := agent.NoRoomReason(cfg, g.Name, obs.Address); why != "" {
			fmt.Fprintf(c.stdout, "  problem: this instance %s\n", why)
			failed = append(failed, g.Name)
		} else if obs.Address.Want != "" {
			fmt.Fprintf(c.stdout, "  elastic IP goes on %s here (private address %d of %s)\n", obs.Address.Want, obs.Address.Index+1, obs.Address.ENIID)
		}
		if !writePermissions(ctx, c.stdout, client, agent.GroupSpec(cfg, g, []string{id.InstanceID}), self, obs) {
			failed = append(failed, g.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("remote check failed for %s", strings.Join(failed, ", "))
	}
	return nil
}

// writeObservation prints what EC2 reports for one group.
func writeObservation(w io.Writer, obs ec2.Observation, self string) {
	who := func(instanceID, eni, other string) string {
		switch {
		case instanceID == self:
			return instanceID + " (this instance)"
		case instanceID != "":
			return instanceID
		case eni != "":
			return eni
		case other != "":
			return other
		}
		return "(nothing)"
	}
	e := obs.EIP
	if e.AllocationID != "" || e.PublicIP != "" {
		fmt.Fprintf(w, "  elastic IP %s %s -> %s\n", orNone(e.AllocationID), orNone(e.PublicIP), who(e.InstanceID, e.ENIID, ""))
	}
	if len(obs.Routes) == 0 {
		fmt.Fprintln(w, "  no managed route found")
	}
	for _, r := range obs.Routes {
		fmt.Fprintf(w, "  route %s %s -> %s %s\n", r.RouteTableID, r.Destination, who(r.InstanceID, r.ENIID, r.OtherTarget), r.State)
	}
	for _, p := range obs.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
}

// writePermissions dry-runs the calls a takeover of the group would make and prints the
// outcome; it reports false when EC2 denies one.
func writePermissions(ctx context.Context, w io.Writer, client *ec2.Client, g ec2.Group, self ec2.Self, obs ec2.Observation) bool {
	p, err := client.CheckPermissions(ctx, g, self, obs)
	switch {
	case err != nil:
		fmt.Fprintf(w, "  permissions: not checked: %v\n", err)
	case !p.Honoured:
		fmt.Fprintln(w, "  permissions: not checked: the EC2 endpoint does not answer dry runs")
	default:
		for _, d := range p.Denied() {
			fmt.Fprintf(w, "  permission denied: %s on %s\n", d.Action, d.Resource)
		}
		for _, d := range p.Inconclusive() {
			fmt.Fprintf(w, "  permission unknown: %s on %s: %v\n", d.Action, d.Resource, d.Err)
		}
		if len(p.Denied()) == 0 {
			fmt.Fprintf(w, "  permissions: a takeover's %d calls allowed (dry run)\n", len(p.Checks)-len(p.Inconclusive()))
		}
		return len(p.Denied()) == 0
	}
	return true
}

// identityOverride turns the node block into the identity fields that replace IMDS answers.
func identityOverride(n config.Node) ec2.Identity {
	return ec2.Identity{
		InstanceID:       n.InstanceID,
		Region:           n.Region,
		AvailabilityZone: n.AvailabilityZone,
		LocalIPv4:        n.LocalIPv4,
		MAC:              n.MAC,
		VPCCIDR:          n.VPCCIDR,
	}
}

// plural returns "1 thing" or "n things".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
