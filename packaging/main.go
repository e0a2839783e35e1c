// Command packaging builds the natganker-agent .deb and .rpm packages with nfpm (used as a
// library) from binaries `make dist` has built. It is its own Go module so that nfpm and its
// dependencies stay out of the agent's go.mod.
//
//	go run . -version "$(git describe --tags --always --dirty)" -dist ../dist -arch "amd64 arm64"
//
// reads ../dist/natganker-agent-linux-<arch> for each arch and writes the packages next to it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

// defaultMaintainer names no person: set MAINTAINER when building packages to publish.
const defaultMaintainer = "natganker maintainers <maintainers@natganker.invalid>"

// binaryName is the file name make dist gives the binary for arch.
func binaryName(arch string) string { return "natganker-agent-linux-" + arch }

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("packaging", flag.ContinueOnError)
	version := fs.String("version", "", "the agent's version, as git describe prints it (required)")
	dist := fs.String("dist", "dist", "directory holding natganker-agent-linux-<arch>; packages are written there")
	arches := fs.String("arch", "amd64 arm64", "Go architectures to package, separated by spaces or commas")
	formats := fs.String("format", strings.Join(Formats, " "), "package formats, separated by spaces or commas")
	root := fs.String("root", "..", "repository root (the unit file, scripts and examples/agent.hcl are read from it)")
	maintainer := fs.String("maintainer", defaultMaintainer, "package maintainer, \"Name <email>\"")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *version == "" {
		return errors.New("-version is required")
	}
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
	}
	for _, arch := range split(*arches) {
		for _, format := range split(*formats) {
			path, err := Build(Spec{
				Format:     format,
				Version:    *version,
				Arch:       arch,
				Binary:     filepath.Join(*dist, binaryName(arch)),
				Root:       *root,
				Maintainer: *maintainer,
			}, *dist)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, path)
		}
	}
	return nil
}
