package main

import (
	"context"
	"flag"
	"io"

	"github.com/natganker/natganker/agent/control"
)

// YieldCommand asks the local agent to hand groups over to the next agent by priority.
type YieldCommand struct {
	stdout io.Writer
	actionFlags
}

// Synopsis returns a one-line description.
func (c *YieldCommand) Synopsis() string {
	return "hand groups to the next agent by priority and stay back"
}

// Usage returns the help text.
func (c *YieldCommand) Usage() string {
	return actionUsage("yield", `Hands the groups to the next healthy agent by priority, for example before
maintenance, and keeps this agent from taking them back until "resume" or a restart
of the agent.`)
}

// flags binds the command's flags to its fields.
func (c *YieldCommand) flags() *flag.FlagSet { return c.flagSet("yield") }

// Run executes the command.
func (c *YieldCommand) Run(ctx context.Context, args []string) error {
	return runAction(ctx, c.stdout, c.flags(), &c.actionFlags, c.Usage(), args, (*control.Client).Yield)
}
