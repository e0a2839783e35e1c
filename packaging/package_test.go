package main

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// repoRoot is the repository root as seen from this package's directory.
const repoRoot = ".."

// wantFiles is what every package must hold, by path: mode, owner and config flags. unitDir
// is where the format keeps systemd units.
func wantFiles(unitDir string) map[string]entry {
	return map[string]entry{
		binPath:                  {mode: 0o755, owner: "root:root"},
		unitDir + "/" + unitName: {mode: 0o644, owner: "root:root"},
		configDir:                {mode: fs.ModeDir | 0o750, owner: "root:root"},
		configPath:               {mode: 0o640, owner: "root:root", config: true, noreplace: true},
		stateDir:                 {mode: fs.ModeDir | 0o750, owner: "root:root"},
	}
}

// fakeBinary stands in for the agent where only the package layout is checked.
func fakeBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "natganker-agent")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho natganker-agent test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPackages_Contents builds the .deb and the .rpm for both architectures and reads them
// back: every file with its mode and owner, the configuration marked as one upgrades never
// overwrite, the maintainer scripts, and the version dpkg and rpm are given.
func TestPackages_Contents(t *testing.T) {
	bin := fakeBinary(t)
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run("deb-"+arch, func(t *testing.T) {
			path, err := Build(Spec{Format: "deb", Version: "3bae79e-dirty", Arch: arch, Binary: bin, Root: repoRoot, Maintainer: defaultMaintainer}, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if want := "natganker-agent_0.0.0+git.3bae79e.dirty-1_" + arch + ".deb"; filepath.Base(path) != want {
				t.Errorf("file name %s, want %s", filepath.Base(path), want)
			}
			pkg, err := readDeb(path)
			if err != nil {
				t.Fatal(err)
			}
			for p, w := range wantFiles(debUnitDir) {
				got, ok := pkg.files[p]
				w.config, w.noreplace = false, false // a .deb lists conffiles apart
				if !ok || got != w {
					t.Errorf("%s: got %+v (present %v), want %+v", p, got, ok, w)
				}
			}
			if got := strings.Fields(pkg.control["conffiles"]); len(got) != 1 || got[0] != configPath {
				t.Errorf("conffiles %q, want only %s", pkg.control["conffiles"], configPath)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				if !strings.HasPrefix(pkg.control[s], "#!/bin/sh") {
					t.Errorf("maintainer script %s missing: %q", s, pkg.control[s])
				}
			}
			for _, line := range []string{"Package: natganker-agent", "Version: 0.0.0+git.3bae79e.dirty-1", "Architecture: " + arch} {
				if !strings.Contains(pkg.control["control"], line+"\n") {
					t.Errorf("control lacks %q:\n%s", line, pkg.control["control"])
				}
			}
		})
		t.Run("rpm-"+arch, func(t *testing.T) {
			path, err := Build(Spec{Format: "rpm", Version: "v1.2.3", Arch: arch, Binary: bin, Root: repoRoot, Maintainer: defaultMaintainer}, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			rpmArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
			if want := "natganker-agent-1.2.3-1." + rpmArch + ".rpm"; filepath.Base(path) != want {
				t.Errorf("file name %s, want %s", filepath.Base(path), want)
			}
			pkg, err := readRPM(path)
			if err != nil {
				t.Fatal(err)
			}
			for p, w := range wantFiles(rpmUnitDir) {
				if got, ok := pkg.files[p]; !ok || got != w {
					t.Errorf("%s: got %+v (present %v), want %+v", p, got, ok, w)
				}
			}
			for _, s := range []string{"postin", "preun", "postun"} {
				if !strings.Contains(pkg.scripts[s], "natganker-agent") {
					t.Errorf("scriptlet %s missing: %q", s, pkg.scripts[s])
				}
			}
		})
	}
}

// TestUnitFile checks the lines the agent's systemd integration is written against, and that
// the unit keeps what the agent needs to run.
func TestUnitFile(t *testing.T) {
	b, err := os.ReadFile(unitName)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		// The agent speaks sd_notify and pings the watchdog from its run loop; SIGHUP reloads.
		"Type=notify", "NotifyAccess=main", "WatchdogSec=10s", "ExecReload=/bin/kill -HUP $MAINPID",
		"ExecStart=/usr/bin/natganker-agent run -config /etc/natganker/agent.hcl", "Restart=always",
		// The control socket and the state file at their default paths.
		"RuntimeDirectory=natganker", "StateDirectory=natganker",
		// nftables over netlink and the net sysctls; gossip, EC2 and the control socket.
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
	} {
		if !lines[want] {
			t.Errorf("unit lacks %q", want)
		}
	}
	// /proc/sys must stay writable for ip_forward and send_redirects.
	for _, bad := range []string{"ProtectKernelTunables=yes", "ProtectKernelTunables=true", "ProcSubset=pid"} {
		if lines[bad] {
			t.Errorf("unit has %q: the agent could not write net.ipv4 sysctls", bad)
		}
	}
}

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":             "1.2.3",
		"v1.2.3-4-gabcdef0":  "1.2.3-4-gabcdef0",
		"1.0.0":              "1.0.0",
		"3bae79e":            "0.0.0+git.3bae79e",
		"3bae79e-dirty":      "0.0.0+git.3bae79e.dirty",
		"dev":                "0.0.0+git.dev",
		"":                   "0.0.0+git.unknown",
		"weird/branch_name!": "0.0.0+git.weird.branch.name.",
	} {
		if got := PackageVersion(in); got != want {
			t.Errorf("PackageVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDeb_InstallOnThisMachine builds the .deb around a freshly built agent, installs it with
// dpkg, runs the installed binary, upgrades it over a changed configuration, and purges it,
// checking that the machine is left as it was. It needs root and dpkg, and a machine where
// natganker-agent is not installed: otherwise it is skipped, saying why.
func TestDeb_InstallOnThisMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs a .deb with dpkg: run as root (make test does)")
	}
	for _, tool := range []string{"dpkg", "dpkg-query", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("installs a .deb with dpkg: %s is not on PATH", tool)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", packageName).CombinedOutput(); err == nil {
		t.Skipf("%s is installed on this machine (%s): the test installs and purges its own and leaves that one alone",
			packageName, strings.TrimSpace(string(out)))
	}
	paths := []string{binPath, configDir, stateDir, debUnitDir + "/" + unitName}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists on this machine: the test could not leave it as it was", p)
		}
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "natganker-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=pkgtest", "-o", bin, "./cmd/natganker-agent")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	deb := func(version string) string {
		t.Helper()
		out := filepath.Join(dir, version)
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		path, err := Build(Spec{Format: "deb", Version: version, Arch: runtime.GOARCH, Binary: bin, Root: repoRoot, Maintainer: defaultMaintainer}, out)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	cmd := func(name string, args ...string) (string, error) {
		c := exec.Command(name, args...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := c.CombinedOutput()
		return string(out), err
	}
	mustRun := func(name string, args ...string) string {
		t.Helper()
		out, err := cmd(name, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}

	first := deb("v0.0.1")
	listing := mustRun("dpkg-deb", "-c", first)
	t.Logf("dpkg-deb -c %s:\n%s", filepath.Base(first), listing)

	keyPath := filepath.Join(configDir, "gossip.key")
	t.Cleanup(func() {
		// The key is the operator's file, not the package's: remove it as an operator would
		// before a purge, so that the purge leaves nothing behind.
		os.Remove(keyPath)
		if out, err := cmd("dpkg", "--purge", packageName); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		if _, err := cmd("dpkg-query", "-W", packageName); err == nil {
			t.Errorf("%s still known to dpkg after the purge", packageName)
		}
		for _, p := range paths {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s left behind by the purge", p)
			}
		}
	})
	mustRun("dpkg", "-i", first)

	t.Run("Version", func(t *testing.T) {
		if out := mustRun(binPath, "version"); !strings.HasPrefix(out, "natganker-agent pkgtest (go") {
			t.Errorf("installed version says %q", out)
		}
	})

	t.Run("Modes", func(t *testing.T) {
		for p, w := range map[string]fs.FileMode{
			binPath: 0o755, configDir: fs.ModeDir | 0o750, configPath: 0o640, stateDir: fs.ModeDir | 0o750,
			debUnitDir + "/" + unitName: 0o644,
		} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Error(err)
				continue
			}
			if got := fi.Mode() & (fs.ModeDir | fs.ModePerm); got != w {
				t.Errorf("%s: mode %v, want %v", p, got, w)
			}
		}
		if got := mustRun("dpkg-query", "-W", "-f", "${Conffiles}", packageName); !strings.Contains(got, configPath+" ") {
			t.Errorf("conffiles %q, want %s", got, configPath)
		}
	})

	t.Run("UnitVerifies", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("systemd-analyze is not on PATH")
		}
		// Unknown settings, bad values and a missing ExecStart binary are all reported.
		if out, err := cmd("systemd-analyze", "verify", debUnitDir+"/"+unitName); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	t.Run("Validate", func(t *testing.T) {
		// The example names /etc/natganker/gossip.key, which an operator creates: until then
		// validate says what is missing.
		out, err := cmd(binPath, "validate", "-config", configPath)
		if err == nil || !strings.Contains(out, keyPath) {
			t.Errorf("validate without the key file: err %v, output %q; want an error naming %s", err, out, keyPath)
		}
		key := bytes.Repeat([]byte("k"), 32)
		if err := os.WriteFile(keyPath, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out = mustRun(binPath, "validate", "-config", configPath)
		if !strings.HasPrefix(out, "config OK: 1 group (egress priority 100)") || strings.Contains(out, "Warning") {
			t.Errorf("validate with the key file: %q", out)
		}
	})

	t.Run("UpgradeKeepsConfig", func(t *testing.T) {
		f, err := os.OpenFile(configPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		const mark = "# changed by the operator\n"
		if _, err := f.WriteString(mark); err != nil {
			t.Fatal(err)
		}
		f.Close()
		mustRun("dpkg", "-i", deb("v0.0.2"))
		if got := mustRun("dpkg-query", "-W", "-f", "${Version}", packageName); got != "0.0.2-1" {
			t.Errorf("version after the upgrade %q", got)
		}
		b, err := os.ReadFile(configPath)
		if err != nil || !strings.HasSuffix(string(b), mark) {
			t.Errorf("the upgrade replaced the operator's configuration (err %v)", err)
		}
	})
}
