package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/lab"
)

// chaosCmd runs random faults against the pair and has an independent referee judge the run.
type chaosCmd struct{}

// Usage describes the chaos command.
func (c *chaosCmd) Usage() string {
	return "Usage: natganker-lab chaos [-minutes 10] [-seed S] [-agent BIN] [-out lab/results] [-failback-delay 5s] [-kinds hard-kill,loss,…] [-live] [-v]\n"
}

// Run runs the chaos run, prints the per-kind table, the violations and the agents'
// resources, and fails when the referee found a violation or a problem.
func (c *chaosCmd) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	agentFlag := fs.String("agent", "", "natganker-agent binary (default: bin/natganker-agent, then $PATH)")
	minutes := fs.Float64("minutes", 10, "length of the fault phase in minutes")
	seed := fs.Uint64("seed", 0, "seed of the random draws (default: from the clock; printed)")
	out := fs.String("out", "lab/results", "directory for the results (Markdown, JSON, SVG, timeline); empty writes none")
	failback := fs.Duration("failback-delay", 5*time.Second, "failback_delay written into the agents' config")
	kinds := fs.String("kinds", "", "comma-separated fault kinds to draw from (default: all): "+kindList())
	live := fs.Bool("live", false, "print the lab's timeline as it happens")
	verbose := fs.Bool("v", false, "log the lab's warnings")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *minutes <= 0 {
		return usageError{"-minutes must be positive"}
	}
	o := lab.ChaosOptions{Duration: time.Duration(*minutes * float64(time.Minute)), Seed: *seed, FailbackDelay: *failback,
		OutDir: *out, Progress: os.Stdout}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if *kinds != "" {
		for _, k := range strings.Split(*kinds, ",") {
			kind := lab.FaultKind(strings.TrimSpace(k))
			if !knownKind(kind) {
				return usageError{fmt.Sprintf("-kinds: unknown fault kind %q (known: %s)", k, kindList())}
			}
			o.Kinds = append(o.Kinds, kind)
		}
	}
	o.AgentBin = findAgent(*agentFlag)
	if o.AgentBin == "" {
		return fmt.Errorf("natganker-agent is not built: run `make build` (or pass -agent PATH)")
	}
	if *live {
		o.Live = os.Stdout
	}
	level := hclog.Error
	if *verbose {
		level = hclog.Warn
	}
	o.Logger = hclog.New(&hclog.LoggerOptions{Name: "natganker-lab", Level: level, Output: os.Stderr})
	fmt.Printf("natganker chaos run: %s of random faults, seed %d (replay the draws with -seed %d)\n", o.Duration, o.Seed, o.Seed)
	res, err := lab.Chaos(ctx, o)
	if res != nil && res.Samples > 0 {
		fmt.Println()
		fmt.Print(res.Summary())
		if *out != "" {
			fmt.Printf("\nresults written under %s (chaos-%s.{md,json,svg}, chaos-%s-timeline.txt)\n", *out,
				res.Started.UTC().Format("20060102T150405Z"), res.Started.UTC().Format("20060102T150405Z"))
		}
	}
	if err != nil {
		return err
	}
	if !res.Passed() {
		return fmt.Errorf("chaos run (seed %d) found %d violation(s) and %d problem(s)", o.Seed, len(res.Violations), len(res.Problems))
	}
	return nil
}

func knownKind(k lab.FaultKind) bool {
	for _, x := range lab.FaultKinds {
		if x == k {
			return true
		}
	}
	return false
}

func kindList() string {
	var out []string
	for _, k := range lab.FaultKinds {
		out = append(out, string(k))
	}
	return strings.Join(out, ",")
}
