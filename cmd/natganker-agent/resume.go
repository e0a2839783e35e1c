package main

import (
	"context"
	"flag"
	"io"

	"github.com/natganker/natganker/agent/control"
)

// ResumeCommand clears a yield, so the local agent may own the groups again.
type ResumeCommand struct {
	stdout io.Writer
	actionFlags
}

// Synopsis returns a one-line description.
func (c *ResumeCommand) Synopsis() string { return "undo a yield" }

// Usage returns the help text.
func (c *ResumeCommand) Usage() string {
	return actionUsage("resume", `Clears a yield on the groups: this agent takes part again, and takes a group
back when its priority is the highest (after the group's failback delay, if failback
is "auto").`)
}

// flags binds the command's flags to its fields.
func (c *ResumeCommand) flags() *flag.FlagSet { return c.flagSet("resume") }

// Run executes the command.
func (c *ResumeCommand) Run(ctx context.Context, args []string) error {
	return runAction(ctx, c.stdout, c.flags(), &c.actionFlags, c.Usage(), args, (*control.Client).Resume)
}
