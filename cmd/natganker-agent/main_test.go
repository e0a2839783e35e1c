package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is what a user sees from one invocation.
type result struct {
	stdout, stderr string
	code           int
}

// run runs the command line in-process, the way main does.
func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	err := Run(context.Background(), args, &out, &errb)
	code := exitCode(err, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// fakeController answers control requests with canned values and records the groups asked for.
type fakeController struct {
	mu     sync.Mutex
	calls  []string
	known  map[string]bool
	member []agent.MemberView
	status agent.StatusView
}

func (f *fakeController) record(op string, groups []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+strings.Join(groups, ","))
	for _, g := range groups {
		if !f.known[g] {
			return fmt.Errorf("%w %q", agent.ErrUnknownGroup, g)
		}
	}
	return nil
}

func (f *fakeController) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeController) Members(context.Context) ([]agent.MemberView, error) {
	return f.member, f.record("members", nil)
}

func (f *fakeController) Status(context.Context) (agent.StatusView, error) {
	return f.status, f.record("status", nil)
}

func (f *fakeController) action(op string, groups []string) (agent.ActionResult, error) {
	if err := f.record(op, groups); err != nil {
		return agent.ActionResult{}, err
	}
	if op == "resume" {
		return agent.ActionResult{Groups: groups}, nil // no message: the CLI says what it did
	}
	return agent.ActionResult{Groups: groups, Message: op + " requested for " + strings.Join(groups, ", ")}, nil
}

func (f *fakeController) Yield(_ context.Context, g []string) (agent.ActionResult, error) {
	return f.action("yield", g)
}

func (f *fakeController) Resume(_ context.Context, g []string) (agent.ActionResult, error) {
	return f.action("resume", g)
}

func (f *fakeController) Takeover(_ context.Context, g []string) (agent.ActionResult, error) {
	return f.action("takeover", g)
}

var observed = time.Date(2026, 11, 29, 17, 0, 0, 0, time.UTC)

func newFake() *fakeController {
	return &fakeController{
		known: map[string]bool{"az-a": true, "az-b": true, "az-c": true},
		member: []agent.MemberView{
			{Name: "i-0aaa", Address: "198.18.1.11:7946", State: "alive", Self: true, Healthy: true,
				Groups: []agent.MemberGroupView{{Name: "az-a", Priority: 200, Owns: true}, {Name: "az-b", Priority: 100}}},
			{Name: "i-0bbb", Address: "198.18.2.11:7946", State: "alive", Healthy: false, Reason: "egress probe failed",
				Groups: []agent.MemberGroupView{{Name: "az-a", Priority: 100, Yielded: true}, {Name: "az-b", Priority: 200, Owns: true}}},
			{Name: "i-0ccc", Address: "198.18.3.11:7946", State: "dead",
				Groups: []agent.MemberGroupView{{Name: "az-b", Priority: 50}}},
		},
		status: agent.StatusView{Node: "i-0aaa", Version: "1.2.3", Groups: []agent.GroupView{
			{
				Name: "az-a", DesiredOwner: "i-0aaa", EC2Owner: "i-0aaa",
				ElasticIP: agent.EIPView{AllocationID: "eipalloc-0a", PublicIP: "198.51.100.7", InstanceID: "i-0aaa"},
				Routes: []agent.RouteView{
					{RouteTableID: "rtb-0a", Destination: "0.0.0.0/0", Target: "i-0aaa", State: "active"},
					{RouteTableID: "rtb-0b", Destination: "0.0.0.0/0", Target: "", State: "missing"},
				},
				ObservedAt: observed,
				LastTakeover: &agent.TakeoverView{Group: "az-a", From: "i-0bbb", To: "i-0aaa", Reason: "owner dead",
					Started: observed.Add(-time.Minute), Detected: 812 * time.Millisecond, Confirmed: 95 * time.Millisecond,
					EIPMoved: 410 * time.Millisecond, RoutesMoved: 730 * time.Millisecond, Verified: 1100 * time.Millisecond},
			},
			{
				Name: "az-b", DesiredOwner: "i-0bbb", EC2Owner: "", Yielded: true,
				ElasticIP:    agent.EIPView{AllocationID: "eipalloc-0b", PublicIP: "198.51.100.8"},
				ObserveError: "describe addresses: RequestLimitExceeded",
			},
		}},
	}
}

// startAgent serves ctrl on a fresh socket and returns its path.
func startAgent(t *testing.T, ctrl agent.Controller) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ngcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	srv := control.NewServer(ctrl, path, hclog.NewNullLogger())
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestRun_UsageErrors(t *testing.T) {
	t.Setenv(socketEnv, "")
	cases := []struct {
		name    string
		args    []string
		message string
		hint    string
	}{
		{"NoCommand", nil, "no command given", "Try: natganker-agent -help"},
		{"UnknownCommand", []string{"frobnicate"}, `unknown command "frobnicate"`, "Try: natganker-agent -help"},
		{"FlagBeforeCommand", []string{"-socket", "x", "members"}, "flag -socket given before any command", "Try: natganker-agent -help"},
		{"HelpForUnknownCommand", []string{"help", "frobnicate"}, `unknown command "frobnicate"`, "Try: natganker-agent -help"},
		{"UnknownFlag", []string{"members", "-verbose"}, "flag provided but not defined: -verbose", "Try: natganker-agent members -help"},
		{"ExtraArgument", []string{"status", "az-a"}, `unexpected argument "az-a"`, "Try: natganker-agent status -help"},
		{"MissingValue", []string{"validate", "-config"}, "flag needs an argument: -config", "Try: natganker-agent validate -help"},
		{"EmptyGroup", []string{"yield", "-group", "az-a,"}, `empty group name in "az-a,"`, "Try: natganker-agent yield -help"},
		{"BadBool", []string{"takeover", "-json=maybe"}, "invalid boolean value", "Try: natganker-agent takeover -help"},
		{"RunExtra", []string{"run", "now"}, `unexpected argument "now"`, "Try: natganker-agent run -help"},
		{"VersionExtra", []string{"version", "-short"}, "flag provided but not defined: -short", "Try: natganker-agent version -help"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.args...)
			if r.code != exitUsage {
				t.Errorf("exit code = %d, want %d", r.code, exitUsage)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "Error: ") || !strings.Contains(lines[0], tc.message) || lines[1] != tc.hint {
				t.Errorf("stderr = %q, want \"Error: …%s…\" then %q", r.stderr, tc.message, tc.hint)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
}

func TestRun_Help(t *testing.T) {
	t.Setenv(socketEnv, "")
	t.Run("TopLevel", func(t *testing.T) {
		for _, arg := range []string{"help", "-help", "--help", "-h"} {
			r := run(t, arg)
			if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "Usage: natganker-agent <command>") {
				t.Errorf("%s: code %d, stderr %q, stdout %q", arg, r.code, r.stderr, r.stdout)
			}
			for _, c := range commands(nil, nil) {
				if !strings.Contains(r.stdout, "\n  "+c.name+" ") {
					t.Errorf("%s: command %s missing from the list", arg, c.name)
				}
			}
			if !strings.Contains(r.stdout, "0 success, 1 failure, 2 usage error") {
				t.Errorf("%s: exit codes missing", arg)
			}
		}
	})
	for _, c := range commands(nil, nil) {
		t.Run(c.name, func(t *testing.T) {
			want := "Usage: natganker-agent " + c.name
			for _, args := range [][]string{{c.name, "-help"}, {c.name, "--help"}, {c.name, "-h"}, {c.name, "help"}, {"help", c.name}} {
				r := run(t, args...)
				if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, want) {
					t.Errorf("%q: code %d, stderr %q, stdout %.60q", args, r.code, r.stderr, r.stdout)
				}
			}
			// The help tells the truth: every flag is documented with its default, nothing
			// else is, and exit codes are given.
			usage := c.cmd.Usage()
			fs := c.cmd.flags()
			fs.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(usage, "  -"+f.Name+" ") {
					t.Errorf("flag -%s is not documented", f.Name)
				}
				if f.DefValue != "" && f.DefValue != "false" && !strings.Contains(usage, "(default "+f.DefValue) && !strings.Contains(usage, ", or "+f.DefValue+")") {
					t.Errorf("default %q of -%s is not documented", f.DefValue, f.Name)
				}
			})
			for _, word := range strings.Fields(usage) {
				word = strings.Trim(word, "[]().,")
				if len(word) > 1 && word[0] == '-' && 'a' <= word[1] && word[1] <= 'z' && fs.Lookup(word[1:]) == nil && word != "-help" {
					t.Errorf("usage mentions %s, which is not a flag", word)
				}
			}
			if !strings.Contains(usage, "Exit status: 0") || !strings.Contains(usage, "2 usage error") {
				t.Errorf("usage does not give the exit codes")
			}
		})
	}
}

func TestRun_Version(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		r := run(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "natganker-agent dev (go") {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

const goodConfig = `
gossip {
  encrypt_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
  peers       = ["198.18.1.11", "198.18.2.11"]
}
group "az-a" {
  priority     = 200
  elastic_ip   = "eipalloc-0123456789abcdef0"
  route_tables = ["rtb-0a0a0a0a"]
}
group "az-b" {
  priority     = 100
  elastic_ip   = "198.51.100.8"
  route_tables = ["rtb-0a1b2c3d"]
}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidate(t *testing.T) {
	t.Run("Good", func(t *testing.T) {
		r := run(t, "validate", "-config", writeFile(t, "agent.hcl", goodConfig))
		want := "config OK: 2 groups (az-a priority 200, az-b priority 100), 2 gossip peers, control socket /run/natganker/agent.sock\n"
		if r.code != 0 || r.stdout != want || r.stderr != "" {
			t.Errorf("code %d, stdout %q, stderr %q; want 0 and %q", r.code, r.stdout, r.stderr, want)
		}
	})
	t.Run("ShippedExample", func(t *testing.T) {
		// The example names a key file under /etc; point it at a key in the test directory.
		src, err := os.ReadFile("../../examples/agent.hcl")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		key := filepath.Join(dir, "gossip.key")
		if err := os.WriteFile(key, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := strings.ReplaceAll(string(src), "/etc/natganker/gossip.key", key)
		r := run(t, "validate", "-config", writeFile(t, "agent.hcl", cfg))
		if r.code != 0 || !strings.HasPrefix(r.stdout, "config OK: ") {
			t.Errorf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	bad := []struct {
		name, config string
		want         []string
	}{
		{"UnknownAttribute", strings.Replace(goodConfig, "priority     = 200", "priority     = 200\n  prio = 1", 1),
			[]string{"agent.hcl:8,3", `unknown attribute "prio"`}},
		{"BadValue", strings.Replace(goodConfig, "priority     = 200", "priority     = 0", 1),
			[]string{`group "az-a".priority`, "0"}},
		{"NotHCL", "group {", []string{"agent.hcl:1"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "validate", "-config", writeFile(t, "agent.hcl", tc.config))
			if r.code != exitFailure || r.stdout != "" || !strings.HasPrefix(r.stderr, "Error: invalid configuration:\n") {
				t.Fatalf("code %d, stdout %q, stderr %q; want 1 and an error", r.code, r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not mention %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "Try:") {
				t.Errorf("a bad configuration is not a usage error: %q", r.stderr)
			}
		})
	}
	t.Run("MissingFile", func(t *testing.T) {
		r := run(t, "validate", "-config", filepath.Join(t.TempDir(), "nope.hcl"))
		if r.code != exitFailure || !strings.Contains(r.stderr, "no such file") {
			t.Errorf("code %d, stderr %q", r.code, r.stderr)
		}
	})
}

func TestMembers(t *testing.T) {
	fake := newFake()
	sock := startAgent(t, fake)
	t.Run("Table", func(t *testing.T) {
		r := run(t, "members", "-socket", sock)
		want := strings.Join([]string{
			"NAME      ADDRESS           STATE  HEALTH                          az-a         az-b",
			"i-0aaa *  198.18.1.11:7946  alive  healthy                         200 owner    100",
			"i-0bbb    198.18.2.11:7946  alive  unhealthy: egress probe failed  100 yielded  200 owner",
			"i-0ccc    198.18.3.11:7946  dead   unhealthy                       -            50",
			""}, "\n")
		if r.code != 0 || r.stdout != want {
			t.Errorf("code %d, stderr %q, stdout:\n%s\nwant:\n%s", r.code, r.stderr, r.stdout, want)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		r := run(t, "members", "-json", "-socket", sock)
		var got []agent.MemberView
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			t.Fatalf("code %d, stdout %q: %v", r.code, r.stdout, err)
		}
		if !reflect.DeepEqual(got, fake.member) {
			t.Errorf("members = %+v, want %+v", got, fake.member)
		}
	})
	t.Run("SocketFromEnvironment", func(t *testing.T) {
		t.Setenv(socketEnv, sock)
		if r := run(t, "members"); r.code != 0 || !strings.HasPrefix(r.stdout, "NAME") {
			t.Errorf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

func TestStatus(t *testing.T) {
	fake := newFake()
	sock := startAgent(t, fake)
	t.Run("Text", func(t *testing.T) {
		var out bytes.Buffer
		cmd := &StatusCommand{stdout: &out, now: func() time.Time { return observed.Add(12 * time.Second) }}
		if err := cmd.Run(context.Background(), []string{"-socket", sock}); err != nil {
			t.Fatal(err)
		}
		want := `Node i-0aaa (natganker 1.2.3)

Group az-a
  Desired owner: i-0aaa
  EC2 owner:     i-0aaa
  Yielded:       no
  Elastic IP:    eipalloc-0a 198.51.100.7 -> i-0aaa
  Observed:      2026-11-29T17:00:00Z (12s ago)
  Routes:
    rtb-0a  0.0.0.0/0  -> i-0aaa     active
    rtb-0b  0.0.0.0/0  -> (missing)  missing
  Last takeover: i-0bbb -> i-0aaa at 2026-11-29T16:59:00Z (owner dead)
    detected after 812ms, confirmed in 95ms, EIP moved at +410ms, routes moved at +730ms, verified at +1.1s

Group az-b
  Desired owner: i-0bbb
  EC2 owner:     (none)
  Yielded:       yes
  Elastic IP:    eipalloc-0b 198.51.100.8 -> (not associated)
  Observed:      never
  Observe error: describe addresses: RequestLimitExceeded
  Routes: none
  Last takeover: none by this agent
`
		if out.String() != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), want)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		r := run(t, "status", "-json", "-socket", sock)
		var got agent.StatusView
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			t.Fatalf("code %d, stdout %q: %v", r.code, r.stdout, err)
		}
		if !reflect.DeepEqual(got, fake.status) {
			t.Errorf("status = %+v, want %+v", got, fake.status)
		}
	})
}

func TestActions(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderr   string
		wantCall string
	}{
		{"YieldAll", []string{"yield"}, 0, "yield requested for \n", "", "yield "},
		{"YieldRepeatedAndCommas", []string{"yield", "-group", "az-a,az-b", "-group", "az-c"}, 0,
			"yield requested for az-a, az-b, az-c\n", "", "yield az-a,az-b,az-c"},
		{"ResumeWithoutMessage", []string{"resume", "-group", "az-b"}, 0, "resume: az-b\n", "", "resume az-b"},
		{"ResumeAll", []string{"resume"}, 0, "resume: all groups\n", "", "resume "},
		{"Takeover", []string{"takeover", "-group", "az-a"}, 0, "takeover requested for az-a\n", "", "takeover az-a"},
		{"TakeoverJSON", []string{"takeover", "-json", "-group", "az-a"}, 0,
			"{\n  \"groups\": [\n    \"az-a\"\n  ],\n  \"message\": \"takeover requested for az-a\"\n}\n", "", "takeover az-a"},
		{"UnknownGroup", []string{"takeover", "-group", "az-z"}, 1, "", "Error: takeover: unknown group \"az-z\"\n", "takeover az-z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake()
			sock := startAgent(t, fake)
			r := run(t, append(tc.args, "-socket", sock)...)
			if r.code != tc.code || r.stdout != tc.stdout || r.stderr != tc.stderr {
				t.Errorf("got code %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
			if calls := fake.Calls(); len(calls) != 1 || calls[0] != tc.wantCall {
				t.Errorf("agent saw %q, want [%q]", calls, tc.wantCall)
			}
		})
	}
}

func TestClientCommands_AgentNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	for _, cmd := range []string{"members", "status", "yield", "resume", "takeover"} {
		t.Run(cmd, func(t *testing.T) {
			r := run(t, cmd, "-socket", sock)
			want := "Error: cannot reach the agent at " + sock + ": is natganker-agent running? ("
			if r.code != exitFailure || !strings.HasPrefix(r.stderr, want) || strings.Contains(r.stderr, "Try:") {
				t.Errorf("code %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"Nil", nil, 0, ""},
		{"Failure", errors.New("boom"), 1, "Error: boom\n"},
		{"WrappedUsage", fmt.Errorf("x: %w", usageErrorf("status", "bad")), 2, "Error: x: bad\nTry: natganker-agent status -help\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if code := exitCode(tc.err, &b); code != tc.code || b.String() != tc.stderr {
				t.Errorf("got %d %q, want %d %q", code, b.String(), tc.code, tc.stderr)
			}
		})
	}
}
