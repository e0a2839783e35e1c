package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Where the package puts things.
const (
	packageName = "natganker-agent"
	binPath     = "/usr/bin/natganker-agent"
	configDir   = "/etc/natganker"
	configPath  = "/etc/natganker/agent.hcl"
	stateDir    = "/var/lib/natganker"
	unitName    = "natganker-agent.service"
	// debUnitDir is where Debian keeps packaged units; rpm-based systems use rpmUnitDir.
	debUnitDir = "/lib/systemd/system"
	rpmUnitDir = "/usr/lib/systemd/system"
)

// Formats are the package formats dist builds.
var Formats = []string{"deb", "rpm"}

// Spec is one package to build.
type Spec struct {
	// Format is "deb" or "rpm".
	Format string
	// Version is the agent's version as `git describe --tags --always --dirty` prints it;
	// PackageVersion turns it into one dpkg and rpm accept.
	Version string
	// Arch is the Go architecture the binary was built for (amd64, arm64).
	Arch string
	// Binary is the static natganker-agent binary to ship.
	Binary string
	// Root is the repository root: the unit file, the scripts and the example config are
	// read from there.
	Root string
	// Maintainer is the package's maintainer, "Name <email>".
	Maintainer string
}

// tagged matches a version from a release tag: v1.2.3 or 1.2.3, with anything after it.
var tagged = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+`)

// PackageVersion turns a git describe version into a package version. A release tag
// ("v1.2.3", "v1.2.3-4-gabcdef") keeps its number; anything else (a bare commit hash, "dev")
// becomes 0.0.0 with the description as build metadata, "0.0.0+git.abcdef.dirty", because
// dpkg and rpm want a version that starts with a digit.
func PackageVersion(v string) string {
	v = strings.TrimSpace(v)
	if tagged.MatchString(v) {
		return strings.TrimPrefix(v, "v")
	}
	meta := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '.'
	}, v)
	if meta == "" {
		meta = "unknown"
	}
	return "0.0.0+git." + meta
}

// info describes the package s.
func info(s Spec) *nfpm.Info {
	unitDir := debUnitDir
	if s.Format == "rpm" {
		unitDir = rpmUnitDir
	}
	root := func(p string) string { return filepath.Join(s.Root, filepath.FromSlash(p)) }
	owned := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode}
	}
	in := &nfpm.Info{
		Name:       packageName,
		Arch:       s.Arch,
		Platform:   "linux",
		Version:    PackageVersion(s.Version),
		Release:    "1",
		Section:    "net",
		Priority:   "optional",
		Maintainer: s.Maintainer,
		Homepage:   "https://github.com/natganker/natganker",
		Description: "High availability for AWS NAT instances\n" +
			"natganker-agent runs on every NAT instance of a VPC. The agents watch each other over\n" +
			"encrypted gossip and keep each group's Elastic IP and default routes on the healthy\n" +
			"instance with the highest priority, moving them within about a second when it dies.",
		Overridables: nfpm.Overridables{
			Contents: files.Contents{
				{Source: s.Binary, Destination: binPath, FileInfo: owned(0o755)},
				{Source: root("packaging/" + unitName), Destination: unitDir + "/" + unitName, FileInfo: owned(0o644)},
				// The directory holds the configuration and the gossip key: root only.
				{Destination: configDir, Type: files.TypeDir, FileInfo: owned(0o750)},
				// The operator's configuration: an upgrade never overwrites it.
				{Source: root("examples/agent.hcl"), Destination: configPath, Type: files.TypeConfigNoReplace, FileInfo: owned(0o640)},
				{Destination: stateDir, Type: files.TypeDir, FileInfo: owned(0o750)},
			},
			Scripts: nfpm.Scripts{
				PostInstall: root("packaging/scripts/postinstall.sh"),
				PreRemove:   root("packaging/scripts/preremove.sh"),
				PostRemove:  root("packaging/scripts/postremove.sh"),
			},
		},
	}
	return nfpm.WithDefaults(in)
}

// Build writes the package s into dir under its conventional file name
// (natganker-agent_1.2.3-1_amd64.deb, natganker-agent-1.2.3-1.x86_64.rpm) and returns its path.
func Build(s Spec, dir string) (string, error) {
	pkgr, err := nfpm.Get(s.Format)
	if err != nil {
		return "", fmt.Errorf("build %s package: %w", s.Format, err)
	}
	if _, err := os.Stat(s.Binary); err != nil {
		return "", fmt.Errorf("build %s package: %w", s.Format, err)
	}
	// The packagers fill in and prepare the description they are given: each call gets a
	// fresh one.
	path := filepath.Join(dir, pkgr.ConventionalFileName(info(s)))
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("build %s package: %w", s.Format, err)
	}
	if err := pkgr.Package(info(s), f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("build %s package for %s: %w", s.Format, s.Arch, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("build %s package: %w", s.Format, err)
	}
	return path, nil
}
