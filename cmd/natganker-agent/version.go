package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

// VersionCommand prints the version of this program.
type VersionCommand struct {
	stdout io.Writer
}

// Synopsis returns a one-line description.
func (c *VersionCommand) Synopsis() string { return "print the version" }

// Usage returns the help text.
func (c *VersionCommand) Usage() string {
	return `Usage: ` + progName + ` version

Prints the version of this program and the Go version it was built with. A running
agent reports its own version in "` + progName + ` status".

Exit status: 0 success, 2 usage error.
`
}

// flags returns the command's flags: none.
func (c *VersionCommand) flags() *flag.FlagSet {
	return flag.NewFlagSet("version", flag.ContinueOnError)
}

// Run executes the command.
func (c *VersionCommand) Run(_ context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	_, err := fmt.Fprintf(c.stdout, "%s %s (%s)\n", progName, version, goVersion)
	return err
}
