// Command natganker-agent runs the natganker agent on a NAT instance and talks to a running
// agent over its control socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// progName is how the program calls itself in messages.
const progName = "natganker-agent"

func main() {
	err := Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// UsageError is a mistake in the command line itself: an unknown command or flag, a missing
// or extra argument. It exits with status 2 and a hint to read the command's help.
type UsageError struct {
	// Command is the subcommand whose usage was wrong, empty for the top level.
	Command string
	// Err says what was wrong.
	Err error
}

// Error returns what was wrong.
func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *UsageError) Unwrap() error { return e.Err }

// usageErrorf returns a UsageError for command.
func usageErrorf(command, format string, args ...any) error {
	return &UsageError{Command: command, Err: fmt.Errorf(format, args...)}
}

// exitCode prints err to stderr, with a hint for usage errors, and returns the exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ue *UsageError
	if errors.As(err, &ue) {
		if ue.Command == "" {
			fmt.Fprintf(stderr, "Try: %s -help\n", progName)
		} else {
			fmt.Fprintf(stderr, "Try: %s %s -help\n", progName, ue.Command)
		}
		return exitUsage
	}
	return exitFailure
}

// command is one subcommand. Run parses its own flags from args.
type command interface {
	// Run executes the command.
	Run(ctx context.Context, args []string) error
	// Usage returns the full help text.
	Usage() string
	// Synopsis returns a one-line description for the command list.
	Synopsis() string
	// flags returns the command's flag set, bound to the command's fields.
	flags() *flag.FlagSet
}

// commands returns the subcommands in the order the help lists them.
func commands(stdout, stderr io.Writer) []struct {
	name string
	cmd  command
} {
	return []struct {
		name string
		cmd  command
	}{
		{"run", &RunCommand{stdout: stdout, stderr: stderr}},
		{"members", &MembersCommand{stdout: stdout}},
		{"status", &StatusCommand{stdout: stdout}},
		{"yield", &YieldCommand{stdout: stdout}},
		{"resume", &ResumeCommand{stdout: stdout}},
		{"takeover", &TakeoverCommand{stdout: stdout}},
		{"keyring", &KeyringCommand{stdout: stdout}},
		{"keygen", &KeygenCommand{stdout: stdout}},
		{"validate", &ValidateCommand{stdout: stdout, stderr: stderr}},
		{"iam-policy", &IAMPolicyCommand{stdout: stdout, stderr: stderr}},
		{"version", &VersionCommand{stdout: stdout}},
	}
}

// Run runs the command line args (without the program name), writing output to stdout and
// diagnostics to stderr. A *UsageError means the command line was wrong.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands(stdout, stderr)
	if len(args) == 0 {
		return usageErrorf("", "no command given")
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-help", "--help", "-h":
		if len(rest) == 0 {
			_, err := io.WriteString(stdout, usage(cmds))
			return err
		}
		if len(rest) > 1 {
			return usageErrorf("", "help takes at most one command, got %q", strings.Join(rest, " "))
		}
		for _, c := range cmds {
			if c.name == rest[0] {
				_, err := io.WriteString(stdout, c.cmd.Usage())
				return err
			}
		}
		return usageErrorf("", "unknown command %q", rest[0])
	case "-version", "--version":
		name = "version"
	}
	for _, c := range cmds {
		if c.name == name {
			return c.cmd.Run(ctx, rest)
		}
	}
	if strings.HasPrefix(name, "-") {
		return usageErrorf("", "flag %s given before any command", name)
	}
	return usageErrorf("", "unknown command %q", name)
}

// usage is the top-level help.
func usage(cmds []struct {
	name string
	cmd  command
}) string {
	var b strings.Builder
	fmt.Fprintf(&b, `Usage: %s <command> [flags]

natganker keeps the Elastic IP and the default routes of a VPC on a healthy NAT instance.
Every NAT instance runs "%s run"; the other commands talk to the agent running
on this machine through its control socket.

Commands:
`, progName, progName)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-10s %s\n", c.name, c.cmd.Synopsis())
	}
	fmt.Fprintf(&b, `
Run "%s <command> -help" (or "%s help <command>") for a command's flags.

Environment:
  NATGANKER_SOCKET  control socket used by members, status, yield, resume and takeover
                    when -socket is not given (default %s)
  NATGANKER_PPROF   run: a path prefix; when told to stop, the agent writes its CPU, heap,
                    allocs and goroutine profiles to PREFIX.cpu, .heap, .allocs, .goroutine
                    and the runtime's memory statistics to PREFIX.memstats
  GOGC              run: the garbage collector's target percentage (default 50, not Go's 100)

Exit status: 0 success, 1 failure, 2 usage error.
`, progName, progName, defaultSocketText)
	return b.String()
}

// goVersion is reported by the version command.
var goVersion = runtime.Version()
