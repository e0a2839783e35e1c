package main

import (
	"context"
	"flag"
	"io"

	"github.com/natganker/natganker/agent/control"
)

// TakeoverCommand makes the local agent own groups now.
type TakeoverCommand struct {
	stdout io.Writer
	actionFlags
}

// Synopsis returns a one-line description.
func (c *TakeoverCommand) Synopsis() string { return "make this instance own groups now" }

// Usage returns the help text.
func (c *TakeoverCommand) Usage() string {
	return actionUsage("takeover", `Moves the groups' Elastic IP and routes to this instance now, whatever the
priorities say (the old script's "forcefail"), clears a yield on them, and waits until
EC2 confirms. The agent has 30s to answer. An unhealthy agent refuses.

With failback = "auto", a healthy peer of higher priority takes the groups back after
its failback_delay: run "natganker-agent yield" on that peer to keep them here.`)
}

// flags binds the command's flags to its fields.
func (c *TakeoverCommand) flags() *flag.FlagSet { return c.flagSet("takeover") }

// Run executes the command.
func (c *TakeoverCommand) Run(ctx context.Context, args []string) error {
	return runAction(ctx, c.stdout, c.flags(), &c.actionFlags, c.Usage(), args, (*control.Client).Takeover)
}
