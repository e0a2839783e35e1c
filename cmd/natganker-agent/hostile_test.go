package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent/control"
)

// TestClientCommands_RefusedUser checks what a user the agent does not allow reads, for every
// command that talks to the agent.
func TestClientCommands_RefusedUser(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "agent.sock")
	fake := newFake()
	srv := control.NewServer(fake, sock, hclog.NewNullLogger(), control.AllowUIDs(os.Geteuid()+4242))
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	want := fmt.Sprintf("Error: the control socket refused this user (uid %d): run as root or as the agent's user\n", os.Geteuid())
	for _, cmd := range []string{"members", "status", "yield", "resume", "takeover"} {
		t.Run(cmd, func(t *testing.T) {
			r := run(t, cmd, "-socket", sock)
			if r.code != exitFailure || r.stderr != want || r.stdout != "" {
				t.Errorf("code %d, stdout %q, stderr %q; want 1 and %q", r.code, r.stdout, r.stderr, want)
			}
		})
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Errorf("the agent was asked %q by a refused user", calls)
	}
}

// keyFileConfig is localConfig with its gossip key read from keyPath.
func keyFileConfig(dir, imds string, port int, keyPath string) string {
	return strings.Replace(localConfig(dir, imds, port),
		`encrypt_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="`, fmt.Sprintf("encrypt_key_file = %q", keyPath), 1)
}

// writeKey writes a gossip key file with the given mode, whatever the umask.
func writeKey(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(path, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKeyFilePermissions(t *testing.T) {
	t.Run("ValidateWarns", func(t *testing.T) {
		dir := shortDir(t)
		key := writeKey(t, dir, 0o644)
		r := run(t, "validate", "-config", writeFile(t, "agent.hcl", keyFileConfig(dir, "http://127.0.0.1:1", 7946, key)))
		want := "Warning: gossip.encrypt_key_file: " + key + " has mode 0644: group and others can read it; " +
			"whoever reads the gossip key can forge gossip and trigger failovers: chmod 600 " + key + "\n"
		if r.code != 0 || r.stderr != want || !strings.HasPrefix(r.stdout, "config OK: 1 group") {
			t.Errorf("code %d, stdout %q, stderr %q; want 0, config OK and %q", r.code, r.stdout, r.stderr, want)
		}
	})
	t.Run("ValidatePrivateKeyQuiet", func(t *testing.T) {
		dir := shortDir(t)
		key := writeKey(t, dir, 0o600)
		r := run(t, "validate", "-config", writeFile(t, "agent.hcl", keyFileConfig(dir, "http://127.0.0.1:1", 7946, key)))
		if r.code != 0 || r.stderr != "" {
			t.Errorf("code %d, stderr %q; want 0 and nothing", r.code, r.stderr)
		}
	})
	t.Run("ValidateKeyInReadableConfig", func(t *testing.T) {
		dir := shortDir(t)
		cfg := writeFile(t, "agent.hcl", localConfig(dir, "http://127.0.0.1:1", 7946))
		if err := os.Chmod(cfg, 0o640); err != nil {
			t.Fatal(err)
		}
		r := run(t, "validate", "-config", cfg)
		want := "Warning: gossip.encrypt_key: the configuration file " + cfg + ", which holds the gossip key, has mode 0640: " +
			"group can read it; whoever reads the gossip key can forge gossip and trigger failovers: chmod 600 " + cfg + "\n"
		if r.code != 0 || r.stderr != want {
			t.Errorf("code %d, stderr %q; want 0 and %q", r.code, r.stderr, want)
		}
	})
	t.Run("RunLogsOnce", func(t *testing.T) {
		// The metadata service refuses, so run stops right after its start-up checks.
		dir := shortDir(t)
		key := writeKey(t, dir, 0o604)
		imds, _ := imdsSpy(t)
		r := run(t, "run", "-config", writeFile(t, "agent.hcl", keyFileConfig(dir, imds, freeGossipPort(t, ""), key)))
		if r.code != exitFailure || !strings.Contains(r.stderr, "Error: identify this instance: ") {
			t.Fatalf("code %d, stderr %q; want 1 and the identity error", r.code, r.stderr)
		}
		var warnings []map[string]any
		for _, line := range strings.Split(r.stderr, "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(fmt.Sprint(rec["@message"]), "gossip key file") {
				warnings = append(warnings, rec)
			}
		}
		if len(warnings) != 1 {
			t.Fatalf("%d key file warnings, want 1:\n%s", len(warnings), r.stderr)
		}
		w := warnings[0]
		if w["@level"] != "warn" || w["path"] != key || w["mode"] != "0604" || w["fix"] != "chmod 600 "+key ||
			w["@message"] != "the gossip key file is open to other users: whoever reads the key can forge gossip and trigger failovers" {
			t.Errorf("warning = %v", w)
		}
	})
}

// measure runs f and reports how long it took and how many bytes the whole process allocated
// meanwhile (the tests of this package do not run in parallel).
func measure(f func()) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	return took, after.TotalAlloc - before.TotalAlloc
}

// TestValidate_HostileFiles feeds validate files that are not configurations, or are far
// larger than one: each must be refused with a clear error, exit status 1, quickly and
// without reading the whole file.
func TestValidate_HostileFiles(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		for i := 0; i < n; i += 97 {
			b[i] = 0 // NULs, as in any binary
		}
		return b
	}
	group := func(i int) string {
		return fmt.Sprintf("group \"g%d\" {\n  priority     = %d\n  elastic_ip   = \"eipalloc-%017x\"\n  route_tables = [\"rtb-%08x\"]\n}\n", i, i%1000+1, i, i)
	}
	manyGroups := func(n int) []byte {
		var b strings.Builder
		b.WriteString("gossip {\n  insecure_plaintext = true\n}\n")
		for i := range n {
			b.WriteString(group(i))
		}
		return []byte(b.String())
	}
	// As many one-line groups as fit under the size limit, to reach the group limit.
	compact := func() []byte {
		var b strings.Builder
		b.WriteString("gossip {\n  insecure_plaintext = true\n}\n")
		for i := 0; ; i++ {
			g := fmt.Sprintf("group \"g%d\" {\npriority = 1\nelastic_ip = \"eipalloc-%d\"\nroute_tables = [\"rtb-%d\"]\n}\n", i, i, i)
			if b.Len()+len(g) > 32<<10 {
				return []byte(b.String())
			}
			b.WriteString(g)
		}
	}
	tenMiB := strings.Repeat(group(1), (10<<20)/len(group(1))+1)[:10<<20]
	thousands, upToLimit := manyGroups(10000), compact()
	upToLimitGroups := strings.Count(string(upToLimit), "group \"")

	cases := []struct {
		name     string
		content  []byte
		want     []string // lines of stderr after "Error: invalid configuration:", in order; PATH is the file
		contains string   // a line that must be among them
		maxAlloc uint64   // 0: only logged
	}{
		{"TenMiBOfConfig", []byte(tenMiB),
			[]string{"PATH: file too large: 10 MiB, limit 32 KiB (a configuration is a few KiB; is this the right file?)"}, "", 8 << 20},
		{"TenMiBOfRandomBytes", random(10 << 20),
			[]string{"PATH: file too large: 10 MiB, limit 32 KiB (a configuration is a few KiB; is this the right file?)"}, "", 8 << 20},
		{"BinaryUnderTheLimit", random(16 << 10), nil, "", 0},
		{"ExecutableHeader", append([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00"), random(4<<10)...), nil, "", 0},
		{"TenThousandGroups", thousands,
			[]string{fmt.Sprintf("PATH: file too large: %.4g MiB, limit 32 KiB (a configuration is a few KiB; is this the right file?)",
				float64(len(thousands))/(1<<20))}, "", 8 << 20},
		{"GroupsUpToTheSizeLimit", upToLimit, nil,
			fmt.Sprintf(`PATH:*: group "g64": too many groups: at most 64 may be configured (got %d)`, upToLimitGroups), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "agent.hcl", string(tc.content))
			var r result
			took, alloc := measure(func() { r = run(t, "validate", "-config", path) })
			t.Logf("%d bytes: validate took %v, allocated %.1f MiB; exit %d; stderr %d bytes, %d lines, first problem: %.200q",
				len(tc.content), took, float64(alloc)/(1<<20), r.code, len(r.stderr), strings.Count(r.stderr, "\n"), firstProblem(r.stderr))
			if r.code != exitFailure || r.stdout != "" || !strings.HasPrefix(r.stderr, "Error: invalid configuration:\n") ||
				strings.Contains(r.stderr, "Try:") {
				t.Fatalf("code %d, stdout %q, stderr %.300q; want exit 1 and an invalid configuration", r.code, r.stdout, r.stderr)
			}
			if took > 5*time.Second {
				t.Errorf("validate took %v", took)
			}
			if tc.maxAlloc > 0 && alloc > tc.maxAlloc {
				t.Errorf("validate allocated %d MiB: it read the whole file", alloc>>20)
			}
			// At most 20 problems and a line counting the rest, each naming the file.
			lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(r.stderr, "Error: invalid configuration:\n"), "\n"), "\n")
			if len(lines) > 21 {
				t.Errorf("%d lines of problems", len(lines))
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, path) && !strings.HasPrefix(l, "and ") && !strings.HasPrefix(l, "group \"") {
					t.Errorf("problem %.200q does not say where", l)
				}
			}
			if tc.contains != "" {
				pattern := strings.ReplaceAll(tc.contains, "PATH", path)
				found := false
				for _, l := range lines {
					found = found || matchStar(l, pattern)
				}
				if !found {
					t.Errorf("no problem matches %q:\n%s", pattern, strings.Join(lines, "\n"))
				}
			}
			if tc.want != nil {
				var want []string
				for _, w := range tc.want {
					want = append(want, strings.ReplaceAll(w, "PATH", path))
				}
				if strings.Join(lines, "\n") != strings.Join(want, "\n") {
					t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
				}
			}
		})
	}
}

// firstProblem returns the first line after "Error: invalid configuration:".
func firstProblem(stderr string) string {
	_, rest, _ := strings.Cut(stderr, "\n")
	first, _, _ := strings.Cut(rest, "\n")
	return first
}

// TestRunCommand_MetadataDownAtStart runs the agent with nothing answering at its metadata
// endpoint and no node block: it must stop at once and say what is missing and how to give it.
func TestRunCommand_MetadataDownAtStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	dir := shortDir(t)
	var r result
	took, _ := measure(func() {
		r = run(t, "run", "-config", writeFile(t, "agent.hcl", localConfig(dir, closed, freeGossipPort(t, ""))))
	})
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	t.Logf("run stopped after %v: %s", took, last)
	wantPrefix := "Error: identify this instance: instance metadata unreachable at " + closed + ": "
	wantSuffix := "connect: connection refused; set node { instance_id, region, local_ipv4 } in the config"
	if r.code != exitFailure || !strings.HasPrefix(last, wantPrefix) || !strings.HasSuffix(last, wantSuffix) {
		t.Errorf("code %d, last line %q; want 1 and %q…%q", r.code, last, wantPrefix, wantSuffix)
	}
	if took > 5*time.Second {
		t.Errorf("run took %v to give up on a closed port", took)
	}
	if _, err := os.Lstat(filepath.Join(dir, "agent.sock")); !os.IsNotExist(err) {
		t.Errorf("the failed run left its control socket: %v", err)
	}
}
