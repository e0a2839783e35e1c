package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/lab"
)

// benchCmd measures hard-kill failovers and false failovers, natganker against keepalived.
type benchCmd struct{}

// Usage describes the bench command.
func (c *benchCmd) Usage() string {
	return "Usage: natganker-lab bench [-runs 30] [-spot 10] [-failback-delay 30s] [-soak 10m] [-loss 5,10,20] [-stall 10m] [-latency 100ms] [-tables 3] [-mech natganker,keepalived] [-out lab/results]\n"
}

// Run runs the benchmark and prints the table.
func (c *benchCmd) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	agentFlag := fs.String("agent", "", "natganker-agent binary (default: bin/natganker-agent, then $PATH)")
	runs := fs.Int("runs", 30, "hard kills per mechanism")
	spot := fs.Int("spot", 10, "spot interruption notices to the owner, measured next to the hard kills (natganker only)")
	failback := fs.Duration("failback-delay", 0, "the agents' failback_delay (0: their default, 30s); shorter settles the pair sooner between runs")
	soak := fs.Duration("soak", 10*time.Minute, "duration of each loss soak per mechanism (0 skips the soaks)")
	losses := fs.String("loss", "5,10,20", "loss rates between the NATs for the soaks, in percent")
	stall := fs.Duration("stall", 10*time.Minute, "duration of the stall soak per mechanism: the owner's process is stopped for 0.2-4 s again and again (0 skips it)")
	latency := fs.Duration("latency", 100*time.Millisecond, "latency added to every EC2 call by the proxy")
	tables := fs.Int("tables", 3, "route tables pointing at the owner (the client's plus extras)")
	mechs := fs.String("mech", "natganker,keepalived", "mechanisms to measure")
	out := fs.String("out", "lab/results", "directory for the results (Markdown, JSON, SVG)")
	sync := fs.Bool("conntrack-sync", true, "run the agents with connection sync (conntrack_sync); false is the control")
	stamp := fs.String("stamp", "", "name the result files bench-STAMP.* (default: the start time, 20060102T150405Z)")
	verbose := fs.Bool("v", false, "log the lab's warnings")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	o := lab.BenchOptions{Runs: *runs, SpotRuns: *spot, FailbackDelay: *failback, Soak: *soak, Stall: *stall, Latency: *latency, ExtraTables: *tables - 1, OutDir: *out, Stamp: *stamp, NoConntrackSync: !*sync, Progress: os.Stdout}
	if *tables < 1 {
		return usageError{"-tables must be at least 1"}
	}
	for _, p := range strings.Split(*losses, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > 100 {
			return usageError{fmt.Sprintf("-loss: bad percentage %q", p)}
		}
		o.Losses = append(o.Losses, n)
	}
	for _, m := range strings.Split(*mechs, ",") {
		switch mech := lab.Mechanism(strings.TrimSpace(m)); mech {
		case lab.Natganker:
			o.AgentBin = findAgent(*agentFlag)
			if o.AgentBin == "" {
				return fmt.Errorf("natganker-agent is not built: run `make build` (or pass -agent PATH)")
			}
			o.Mechanisms = append(o.Mechanisms, mech)
		case lab.Keepalived:
			o.Mechanisms = append(o.Mechanisms, mech)
		default:
			return usageError{fmt.Sprintf("-mech: unknown mechanism %q", m)}
		}
	}
	level := hclog.Error
	if *verbose {
		level = hclog.Warn
	}
	o.Logger = hclog.New(&hclog.LoggerOptions{Name: "natganker-lab", Level: level, Output: os.Stderr})
	fmt.Printf("natganker failover benchmark: %d hard kills per mechanism, soaks %s at %s%% loss, EC2 latency %s + throttling, %d route tables\n",
		*runs, *soak, *losses, *latency, *tables)
	res, err := lab.Bench(ctx, o)
	if res != nil {
		fmt.Println()
		fmt.Print(res.Table())
		if *out != "" {
			fmt.Printf("\nresults written under %s (bench-%s.{md,json,svg})\n", *out, res.Stamp)
		}
	}
	return err
}
