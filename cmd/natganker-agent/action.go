package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
)

// actionFlags are the flags shared by yield, resume and takeover.
type actionFlags struct {
	groups groupList
	json   bool
	socket string
}

// flagSet binds the flags for the named command.
func (a *actionFlags) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Var(&a.groups, "group", "")
	fs.BoolVar(&a.json, "json", false, "")
	fs.StringVar(&a.socket, "socket", defaultSocket(), "")
	return fs
}

// actionCall is one of the control operations that take groups.
type actionCall func(c *control.Client, ctx context.Context, groups []string) (agent.ActionResult, error)

// runAction parses the flags of yield, resume or takeover, calls the agent and prints its
// answer.
func runAction(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, a *actionFlags, usage string, args []string, call actionCall) error {
	if err := parseFlags(fs, args); err != nil {
		return printHelp(stdout, usage, err)
	}
	res, err := call(control.NewClient(a.socket), ctx, a.groups)
	if err != nil {
		return err
	}
	if a.json {
		return writeJSON(stdout, res)
	}
	if res.Message != "" {
		_, err = fmt.Fprintln(stdout, res.Message)
		return err
	}
	which := "all groups"
	if len(res.Groups) > 0 {
		which = strings.Join(res.Groups, ", ")
	}
	_, err = fmt.Fprintf(stdout, "%s: %s\n", fs.Name(), which)
	return err
}

// actionUsage builds the help of an action command.
func actionUsage(name, what string) string {
	return `Usage: ` + progName + ` ` + name + ` [-group NAME]... [-json] [-socket PATH]

` + what + `

Flags:
  -group NAME    a group to act on; repeat the flag or separate names with commas
                 (default: every group the agent manages)
  -json          print the agent's answer as JSON
` + socketFlagHelp + `

` + clientExitHelp + " A group the agent does not manage is a failure (1).\n"
}
