package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
)

// StatusCommand shows, per group, who should own it and what EC2 says about it.
type StatusCommand struct {
	stdout io.Writer
	now    func() time.Time // nil: time.Now

	json   bool
	socket string
}

// Synopsis returns a one-line description.
func (c *StatusCommand) Synopsis() string {
	return "show each group's owner, Elastic IP, routes and last takeover"
}

// Usage returns the help text.
func (c *StatusCommand) Usage() string {
	return `Usage: ` + progName + ` status [-json] [-socket PATH]

Shows, for each group the local agent manages: the owner the cluster agreed on
("desired owner"), the instance EC2 says holds the group ("EC2 owner"), whether this
agent has yielded it, the Elastic IP (allocation, public address -> instance), every
managed route (route table, destination -> target, state), when EC2 was last read, and
the last takeover made by this agent with its timings: "detected after" is the time
from the triggering event (such as the owner going quiet) to the start of the takeover,
"confirmed in" the time spent confirming the old owner is gone, and the EIP, route and
verification times are measured from the start of the takeover. With connection sync on,
it also shows whether this node is sending its flows (it owns a group), how many flows it
holds of each peer, and how many it installed on takeovers.

Flags:
  -json          print the agent's answer as JSON
` + socketFlagHelp + `

` + clientExitHelp + "\n"
}

// flags binds the command's flags to its fields.
func (c *StatusCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "")
	fs.StringVar(&c.socket, "socket", defaultSocket(), "")
	return fs
}

// Run executes the command.
func (c *StatusCommand) Run(ctx context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	st, err := control.NewClient(c.socket).Status(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, st)
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	return writeStatus(c.stdout, st, now())
}

// writeStatus prints st for a person to read.
func writeStatus(w io.Writer, st agent.StatusView, now time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Node %s (natganker %s)\n", orNone(st.Node), st.Version)
	if len(st.Groups) == 0 {
		b.WriteString("\nNo groups.\n")
	}
	for _, g := range st.Groups {
		fmt.Fprintf(&b, "\nGroup %s\n", g.Name)
		tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "  Desired owner:\t%s\n", orNone(g.DesiredOwner))
		owner := orNone(g.EC2Owner)
		if g.EC2Owner != "" && g.DesiredOwner != "" && g.EC2Owner != g.DesiredOwner {
			owner += " (differs from the desired owner)"
		}
		fmt.Fprintf(tw, "  EC2 owner:\t%s\n", owner)
		fmt.Fprintf(tw, "  Yielded:\t%s\n", yesNo(g.Yielded))
		if g.Ineligible != "" {
			fmt.Fprintf(tw, "  This node:\tnot eligible: %s\n", g.Ineligible)
		}
		eip := g.ElasticIP
		at := orText(eip.InstanceID, "(not associated)")
		if eip.InstanceID != "" && eip.PrivateIP != "" {
			at += " at " + eip.PrivateIP
		}
		fmt.Fprintf(tw, "  Elastic IP:\t%s %s -> %s\n", orNone(eip.AllocationID), orNone(eip.PublicIP), at)
		if g.ObservedAt.IsZero() {
			fmt.Fprintf(tw, "  Observed:\tnever\n")
		} else {
			fmt.Fprintf(tw, "  Observed:\t%s (%s ago)\n", g.ObservedAt.UTC().Format(time.RFC3339), roundDur(now.Sub(g.ObservedAt)))
		}
		if g.ObserveError != "" {
			fmt.Fprintf(tw, "  Observe error:\t%s\n", g.ObserveError)
		}
		tw.Flush()

		if len(g.Routes) == 0 {
			b.WriteString("  Routes: none\n")
		} else {
			b.WriteString("  Routes:\n")
			rw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
			for _, r := range g.Routes {
				fmt.Fprintf(rw, "    %s\t%s\t-> %s\t%s\n", r.RouteTableID, r.Destination, orText(r.Target, "(missing)"), r.State)
			}
			rw.Flush()
		}

		if t := g.LastTakeover; t == nil {
			b.WriteString("  Last takeover: none by this agent\n")
		} else {
			fmt.Fprintf(&b, "  Last takeover: %s -> %s at %s (%s)\n", orNone(t.From), orNone(t.To), t.Started.UTC().Format(time.RFC3339Nano), orText(t.Reason, "no reason given"))
			fmt.Fprintf(&b, "    %s\n", takeoverTimings(t))
			if t.Error != "" {
				fmt.Fprintf(&b, "    error: %s\n", t.Error)
			}
		}
	}
	if cs := st.ConntrackSync; cs != nil {
		state := "on, holding what the peers send"
		if cs.Sending {
			state = "on, sending this node's flows to the peers"
		}
		fmt.Fprintf(&b, "\nConnection sync: %s\n", state)
		names := make([]string, 0, len(cs.Held))
		for n := range cs.Held {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "  Flows held of %s: %d\n", n, cs.Held[n])
		}
		fmt.Fprintf(&b, "  Installed on takeovers: %d; dropped at max_flows: %d\n", cs.Installed, cs.Dropped)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// takeoverTimings lists the steps of a takeover that happened, with their timings.
func takeoverTimings(t *agent.TakeoverView) string {
	var parts []string
	add := func(label string, d time.Duration) {
		if d > 0 {
			parts = append(parts, label+" "+roundDur(d).String())
		}
	}
	add("detected after", t.Detected)
	add("confirmed in", t.Confirmed)
	add("EIP moved at +", t.EIPMoved)
	add("routes moved at +", t.RoutesMoved)
	add("verified at +", t.Verified)
	if len(parts) == 0 {
		return "no step completed"
	}
	return strings.ReplaceAll(strings.Join(parts, ", "), "+ ", "+")
}

// roundDur rounds d for display: milliseconds below a minute, seconds above.
func roundDur(d time.Duration) time.Duration {
	if d >= time.Minute || d <= -time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

func orNone(s string) string { return orText(s, "(none)") }

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
