package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/natganker/natganker/lab"
)

// reportCmd puts one benchmark run's results together and writes them into the README.
type reportCmd struct{}

func (c *reportCmd) Run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: natganker-lab report -stamp STAMP [flags]\n\n"+
			"Puts bench-STAMP.md, sweep-STAMP.md and footprint-STAMP.md from -dir together as report-STAMP.md\n"+
			"and replaces the README's measured section (between its measured:begin and measured:end lines)\n"+
			"with it. make bench runs it last.\n\n")
		fs.PrintDefaults()
	}
	dir := fs.String("dir", "lab/results", "directory holding the results")
	stamp := fs.String("stamp", "", "the run's stamp, as in bench-STAMP.md (required)")
	readme := fs.String("readme", "README.md", "README whose measured section is replaced (empty: none)")
	command := fs.String("command", "make bench", "how the results were made, as the report says")
	parts := fs.String("from", "", "parts taken from other runs, as part=STAMP,… (parts: bench, sweep, footprint)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *stamp == "" {
		return usageError{"report: -stamp is required"}
	}
	o := lab.ReportOptions{Dir: *dir, Stamp: *stamp, Readme: *readme, Command: *command, Stamps: map[string]string{}}
	for _, kv := range strings.Split(*parts, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		part, s, ok := strings.Cut(kv, "=")
		known := false
		for _, p := range lab.ReportParts {
			known = known || p.Prefix == part
		}
		if !ok || s == "" || !known {
			return usageError{fmt.Sprintf("report: -from: %q is not part=STAMP with part one of bench, sweep, footprint", kv)}
		}
		o.Stamps[part] = s
	}
	path, err := lab.WriteReport(o)
	if err != nil {
		return err
	}
	fmt.Printf("report written to %s\n", path)
	if *readme != "" {
		fmt.Printf("measured section of %s replaced\n", *readme)
	}
	return nil
}
