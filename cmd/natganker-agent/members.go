package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
)

// MembersCommand lists the agents of the cluster as the local agent sees them.
type MembersCommand struct {
	stdout io.Writer

	json   bool
	socket string
}

// Synopsis returns a one-line description.
func (c *MembersCommand) Synopsis() string {
	return "list the agents of the cluster and their priorities"
}

// Usage returns the help text.
func (c *MembersCommand) Usage() string {
	return `Usage: ` + progName + ` members [-json] [-socket PATH]

Lists every agent the local agent knows, itself included (marked with *), with its
gossip address, membership state (alive, dead or left; "leaving" for the local agent
while it shuts down), health as the agent last published it, and one column per group
giving its priority there, followed by "owner" when it holds the group (as EC2 last
reported) and "yielded" when an operator has made it step back. "-" means the agent
does not take part in that group.

Flags:
  -json          print the agent's answer as JSON
` + socketFlagHelp + `

` + clientExitHelp + "\n"
}

// flags binds the command's flags to its fields.
func (c *MembersCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("members", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "")
	fs.StringVar(&c.socket, "socket", defaultSocket(), "")
	return fs
}

// Run executes the command.
func (c *MembersCommand) Run(ctx context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	members, err := control.NewClient(c.socket).Members(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, members)
	}
	return writeMembers(c.stdout, members)
}

// writeMembers prints members as a table.
func writeMembers(w io.Writer, members []agent.MemberView) error {
	// Columns follow the groups in the order they are first seen, which is the order of the
	// agent's own configuration when it lists itself first.
	var groups []string
	seen := map[string]bool{}
	for _, m := range members {
		for _, g := range m.Groups {
			if !seen[g.Name] {
				seen[g.Name] = true
				groups = append(groups, g.Name)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := append([]string{"NAME", "ADDRESS", "STATE", "HEALTH"}, groups...)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, m := range members {
		name := m.Name
		if m.Self {
			name += " *"
		}
		row := []string{name, m.Address, m.State, health(m)}
		for _, g := range groups {
			row = append(row, groupCell(m.Groups, g))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// health describes a member's health in one cell.
func health(m agent.MemberView) string {
	switch {
	case m.Healthy && m.Reason != "":
		// Healthy, but something about the path to it needs the operator (a gossip port
		// open for one protocol only).
		return "healthy; " + m.Reason
	case m.Healthy:
		return "healthy"
	case m.Reason != "":
		return "unhealthy: " + m.Reason
	default:
		return "unhealthy"
	}
}

// groupCell shows a member's priority in group name, with its markers.
func groupCell(gs []agent.MemberGroupView, name string) string {
	for _, g := range gs {
		if g.Name != name {
			continue
		}
		cell := strconv.Itoa(g.Priority)
		if g.Owns {
			cell += " owner"
		}
		if g.Yielded {
			cell += " yielded"
		}
		if g.Ineligible != "" {
			cell += " ineligible"
		}
		return cell
	}
	return "-"
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
