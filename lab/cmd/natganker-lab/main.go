// Command natganker-lab runs natganker's failover lab: `up` builds it and waits, `down`
// removes what a crashed run left, `demo` shows one failover and failback, `bench`
// measures failovers against keepalived, `chaos` runs random faults judged by a referee,
// `report` writes a benchmark run into the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/natganker/natganker/lab"
)

func main() {
	if lab.IsHelper() {
		os.Exit(lab.RunHelper())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintln(os.Stderr, "Try: natganker-lab -h")
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError marks errors in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `Usage: natganker-lab <command> [flags]

Commands:
  up      build the lab (namespaces, moto, metadata mocks, VPC stand-in) and keep it until Ctrl-C
  down    remove namespaces and processes left by a crashed run
  demo    hard-kill the owning NAT, show the takeover and the client's outage, then the failback
  bench   repeated hard kills and loss soaks, natganker against keepalived
  chaos   random faults for -minutes (seeded), judged by a referee independent of the agent
  report  put one benchmark run's results together and write them into the README
`

// Run dispatches to a subcommand.
func Run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Print(usage)
		if len(args) == 0 {
			return usageError{"missing command"}
		}
		return nil
	}
	switch args[0] {
	case "up":
		return (&upCmd{}).Run(ctx, args[1:])
	case "down":
		return (&downCmd{}).Run(ctx, args[1:])
	case "demo":
		return (&demoCmd{}).Run(ctx, args[1:])
	case "bench":
		return (&benchCmd{}).Run(ctx, args[1:])
	case "chaos":
		return (&chaosCmd{}).Run(ctx, args[1:])
	case "report":
		return (&reportCmd{}).Run(ctx, args[1:])
	}
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}
