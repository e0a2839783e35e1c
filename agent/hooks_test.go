package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
	"github.com/natganker/natganker/gossip"
)

// The hook tests run real programs: shell scripts written to the test's directory that
// record each call (its NATGANKER_* environment, one file per call), block until told to
// go on, or leave children behind.

// script writes an executable shell script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// recorder is a hook that writes its NATGANKER_* environment to a new file in dir per call
// and, when the file "$dir/hold" exists, waits until it is gone first.
func recorder(t *testing.T, dir string) string {
	t.Helper()
	return script(t, dir, "record.sh", `dir="$1"
while [ -e "$dir/hold" ]; do sleep 0.01; done
f=$(mktemp "$dir/call.XXXXXX")
env | grep '^NATGANKER_' | sort > "$f.tmp"
mv "$f.tmp" "$f.env"
rm -f "$f"
`)
}

// calls reads the environments the recorder wrote, one map per call, ordered by event time.
func calls(t *testing.T, dir string) []map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "call.*.env"))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		out = append(out, env)
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["NATGANKER_TIME"] < out[j]["NATGANKER_TIME"] })
	return out
}

// hookResults is a HookObserver that counts results.
type hookResults struct {
	mu  sync.Mutex
	got map[string]int // "hook result" → count
}

func (r *hookResults) HookRun(hook, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[string]int{}
	}
	r.got[hook+" "+result]++
}

func (r *hookResults) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[key]
}

func (r *hookResults) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.got {
		n += c
	}
	return n
}

// startHooks starts a runner with a log the test can read; it is closed when the test ends.
func startHooks(t *testing.T, cfg config.Hooks) (*HookRunner, *hookResults, *syncBuffer) {
	t.Helper()
	log := &syncBuffer{}
	res := &hookResults{}
	h := NewHookRunner(cfg, "i-self", res, hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: log}))
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		if t.Failed() {
			t.Logf("hooks log:\n%s", log.String())
		}
	})
	return h, res, log
}

// TestHooks_Environment: each hook gets the event in NATGANKER_* variables: the takeover's
// timings with an acquire, the member and its state with a member event.
func TestHooks_Environment(t *testing.T) {
	noLeak(t)
	dir := t.TempDir()
	rec := recorder(t, dir)
	h, res, _ := startHooks(t, config.Hooks{OnAcquire: []string{rec, dir}, OnRelease: []string{rec, dir}, OnMember: []string{rec, dir}, Timeout: 10 * time.Second})

	at := time.Now()
	h.Event(Event{Kind: EventAcquire, At: at, Group: "egress", From: "i-a", To: "i-self", Cause: "takeover",
		Reason: "owner i-a is dead (confirmed by direct probes)",
		Takeover: &TakeoverView{Detected: 812 * time.Millisecond, Confirmed: 41 * time.Millisecond,
			EIPMoved: 30 * time.Millisecond, RoutesMoved: 55 * time.Millisecond, Verified: 90 * time.Millisecond}})
	waitFor(t, "the acquire hook", func() bool { return res.count("on_acquire ok") == 1 })
	h.Event(Event{Kind: EventMember, At: at.Add(time.Millisecond), Member: "i-a", State: "dead", Reason: ""})
	waitFor(t, "the member hook", func() bool { return res.count("on_member ok") == 1 })
	h.Event(Event{Kind: EventRelease, At: at.Add(2 * time.Millisecond), Group: "egress", From: "i-self", To: "i-a", Cause: "yielded",
		Reason: "handed over: this node yielded the group"})
	waitFor(t, "the release hook", func() bool { return res.count("on_release ok") == 1 })

	cs := calls(t, dir)
	if len(cs) != 3 {
		t.Fatalf("%d calls recorded, want 3: %v", len(cs), cs)
	}
	for i, want := range []map[string]string{
		{"NATGANKER_EVENT": "acquire", "NATGANKER_NODE": "i-self", "NATGANKER_GROUP": "egress", "NATGANKER_FROM": "i-a",
			"NATGANKER_TO": "i-self", "NATGANKER_REASON": "owner i-a is dead (confirmed by direct probes)", "NATGANKER_CAUSE": "takeover",
			"NATGANKER_DETECTED_MS": "812", "NATGANKER_CONFIRMED_MS": "41", "NATGANKER_EIP_MS": "30",
			"NATGANKER_ROUTES_MS": "55", "NATGANKER_VERIFIED_MS": "90",
			"NATGANKER_TIME": at.UTC().Format(time.RFC3339Nano)},
		{"NATGANKER_EVENT": "member", "NATGANKER_MEMBER": "i-a", "NATGANKER_STATE": "dead", "NATGANKER_HEALTHY": "false"},
		{"NATGANKER_EVENT": "release", "NATGANKER_GROUP": "egress", "NATGANKER_FROM": "i-self", "NATGANKER_TO": "i-a",
			"NATGANKER_CAUSE": "yielded", "NATGANKER_REASON": "handed over: this node yielded the group"},
	} {
		for k, v := range want {
			if got, ok := cs[i][k]; !ok || got != v {
				t.Errorf("call %d (%s): %s = %q, want %q", i, cs[i]["NATGANKER_EVENT"], k, got, v)
			}
		}
	}
	if _, ok := cs[2]["NATGANKER_DETECTED_MS"]; ok {
		t.Errorf("a release carries takeover timings: %v", cs[2])
	}
}

// TestHooks_OncePerEvent: every event runs its hook exactly once, in order, even when the
// events come faster than the hooks run.
func TestHooks_OncePerEvent(t *testing.T) {
	noLeak(t)
	dir := t.TempDir()
	rec := recorder(t, dir)
	h, res, _ := startHooks(t, config.Hooks{OnAcquire: []string{rec, dir}, OnRelease: []string{rec, dir}, Timeout: 10 * time.Second})
	const n = 20
	start := time.Now()
	for i := range n {
		kind := EventAcquire
		if i%2 == 1 {
			kind = EventRelease
		}
		h.Event(Event{Kind: kind, At: start.Add(time.Duration(i) * time.Millisecond), Group: fmt.Sprintf("g%02d", i)})
	}
	waitFor(t, "every hook", func() bool { return res.total() >= n })
	h.Close()
	if got := res.count("on_acquire ok") + res.count("on_release ok"); got != n {
		t.Fatalf("%d hooks ran ok, want %d: %v", got, n, res.got)
	}
	cs := calls(t, dir)
	if len(cs) != n {
		t.Fatalf("%d calls recorded, want %d", len(cs), n)
	}
	for i, c := range cs {
		if want := fmt.Sprintf("g%02d", i); c["NATGANKER_GROUP"] != want {
			t.Errorf("call %d is for group %s, want %s (each event once, in order)", i, c["NATGANKER_GROUP"], want)
		}
	}
}

// TestHooks_TimeoutKillsProcessGroup: a hook still running at its timeout is killed with
// everything it started, and the runner goes on with the next event.
func TestHooks_TimeoutKillsProcessGroup(t *testing.T) {
	noLeak(t)
	dir := t.TempDir()
	hang := script(t, dir, "hang.sh", `echo "started"
sleep 1000 &
echo $! > "$1/child.pid"
echo $$ > "$1/hook.pid"
wait
`)
	rec := recorder(t, dir)
	h, res, log := startHooks(t, config.Hooks{OnAcquire: []string{hang, dir}, OnRelease: []string{rec, dir}, Timeout: 300 * time.Millisecond})
	h.Event(Event{Kind: EventAcquire, At: time.Now(), Group: "egress"})
	// The next run gets all the time it needs: a run keeps the timeout of its event.
	h.ReloadHooks(config.Hooks{OnAcquire: []string{hang, dir}, OnRelease: []string{rec, dir}, Timeout: time.Minute})
	h.Event(Event{Kind: EventRelease, At: time.Now(), Group: "egress"})
	waitFor(t, "both hooks", func() bool { return res.total() == 2 })
	if res.count("on_acquire timeout") != 1 || res.count("on_release ok") != 1 {
		t.Fatalf("results %v, want the hanging hook timed out and the next one run", res.got)
	}
	for _, name := range []string{"hook.pid", "child.pid"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		// Killed processes may linger as zombies of the test process for a moment only.
		waitFor(t, name+" gone", func() bool {
			err := syscall.Kill(pid, 0)
			return err == syscall.ESRCH || zombie(pid)
		})
	}
	if s := log.String(); !strings.Contains(s, "hook timed out: killed its process group") || !strings.Contains(s, "started") {
		t.Errorf("the log lacks the timeout or the hook's output:\n%s", s)
	}
}

// zombie reports whether pid is a process that has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

// TestHooks_QueueFullDrops: while a hook hangs, events keep being accepted without waiting;
// beyond the queue's room they are dropped with a warning, and none runs twice.
func TestHooks_QueueFullDrops(t *testing.T) {
	noLeak(t)
	dir := t.TempDir()
	rec := recorder(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "hold"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h, res, log := startHooks(t, config.Hooks{OnMember: []string{rec, dir}, Timeout: time.Minute})
	const n = hookQueueLen + 10
	for i := range n {
		// Returns at once each time, or the test would hang here.
		h.Event(Event{Kind: EventMember, At: time.Now(), Member: fmt.Sprintf("i-%d", i), State: "alive", Healthy: true})
	}
	dropped := res.count("on_member dropped")
	if dropped < n-hookQueueLen-1 {
		t.Errorf("%d events dropped with one hook hanging and %d queued, want at least %d", dropped, hookQueueLen, n-hookQueueLen-1)
	}
	if !strings.Contains(log.String(), "hook queue full") {
		t.Errorf("no warning about the full queue:\n%s", log.String())
	}
	if err := os.Remove(filepath.Join(dir, "hold")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queued hooks", func() bool { return res.total() == n })
	if ok := res.count("on_member ok"); ok != n-dropped || len(calls(t, dir)) != ok {
		t.Errorf("%d ran ok and %d calls recorded; want %d each (every event not dropped, once)", ok, len(calls(t, dir)), n-dropped)
	}
}

// TestHooks_OutputBounded: a hook's output is logged, but only its first hookOutputMax bytes.
func TestHooks_OutputBounded(t *testing.T) {
	noLeak(t)
	dir := t.TempDir()
	loud := script(t, dir, "loud.sh", `i=0; while [ $i -lt 2000 ]; do echo "line $i of output"; i=$((i+1)); done; echo "to stderr" >&2; exit 3`)
	h, res, log := startHooks(t, config.Hooks{OnAcquire: []string{loud}, Timeout: 10 * time.Second})
	h.Event(Event{Kind: EventAcquire, At: time.Now(), Group: "egress"})
	waitFor(t, "the hook", func() bool { return res.count("on_acquire failed") == 1 })
	s := log.String()
	if !strings.Contains(s, "hook failed") || !strings.Contains(s, "line 0 of output") || !strings.Contains(s, "more bytes not logged") {
		t.Errorf("want the failure, the start of the output and a note of the rest:\n%.600s", s)
	}
	if strings.Contains(s, "line 1999 of output") || len(s) > 3*hookOutputMax {
		t.Errorf("logged %d bytes: the output is not bounded", len(s))
	}
}

// startLoopSinks is startLoop with event sinks; they are closed when the test ends (kill,
// like SIGKILL, closes nothing).
func startLoopSinks(t *testing.T, self string, cfg *config.Config, cloud *fakeCloud, sinks ...EventSink) *loopAgent {
	t.Helper()
	l := &loopAgent{cloud: cloud, gossip: newFakeGossip(), log: &syncBuffer{}}
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: l.log})
	a, err := New(cfg, ec2.Identity{InstanceID: self, LocalIPv4: "127.0.0.1"},
		Deps{Cloud: cloud, Membership: l.gossip, Version: "test", Events: sinks}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Agent = a
	t.Cleanup(func() {
		l.kill()
		if err := a.closeSinks(sinks); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", l.log.String())
		}
	})
	return l
}

// TestLoop_SlowHooksDoNotDelayTakeover: every hook hangs (on_member from the first peer
// event on); the owner dies and the takeover completes all the same, while the hooks still
// hang. Once they are let go, on_acquire runs once, with the takeover's timings, and each
// member change once.
func TestLoop_SlowHooksDoNotDelayTakeover(t *testing.T) {
	noLeak(t)
	dir := t.TempDir()
	rec := recorder(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "hold"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := &hookResults{}
	hooks := NewHookRunner(config.Hooks{OnAcquire: []string{rec, dir}, OnRelease: []string{rec, dir}, OnMember: []string{rec, dir}, Timeout: time.Minute},
		"i-b", res, nil)
	cloud := newFakeCloud("i-a", "rtb-1", "rtb-2")
	l := startLoopSinks(t, "i-b", loopConfig(100, time.Hour), cloud, hooks)
	l.gossip.peer("i-a", gossip.StateAlive, 200, true)
	waitFor(t, "the first read", func() bool { return l.status(t).EC2Owner == "i-a" })

	l.gossip.set(func(g *fakeGossip) {
		g.contact["i-a"] = time.Now().Add(-time.Second)
		g.silent["i-a"] = true
		g.probes["i-a"] = gossip.Probe{Took: 30 * time.Millisecond}
	})
	l.gossip.peer("i-a", gossip.StateDead, 200, true)
	waitFor(t, "nat b to own everything", func() bool { return cloud.allOn("i-b") })
	waitFor(t, "the takeover report", func() bool { return l.status(t).LastTakeover != nil })
	if n := len(calls(t, dir)); n != 0 || res.total() != 0 {
		t.Fatalf("%d hooks finished while every hook hangs", n)
	}
	// More reads and decisions while the hooks still hang: nothing new to announce.
	for range 3 {
		readAgain(t, l)
	}

	if err := os.Remove(filepath.Join(dir, "hold")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hooks", func() bool { return res.count("on_acquire ok") == 1 && res.count("on_member ok") == 2 })
	hooks.Close()
	var acquires, members []map[string]string
	for _, c := range calls(t, dir) {
		switch c["NATGANKER_EVENT"] {
		case "acquire":
			acquires = append(acquires, c)
		case "member":
			members = append(members, c)
		default:
			t.Errorf("unexpected call: %v", c)
		}
	}
	if len(acquires) != 1 || len(members) != 2 {
		t.Fatalf("%d acquire and %d member calls, want 1 and 2 (alive, then dead)", len(acquires), len(members))
	}
	a := acquires[0]
	if a["NATGANKER_FROM"] != "i-a" || a["NATGANKER_TO"] != "i-b" || a["NATGANKER_CAUSE"] != "takeover" ||
		!strings.Contains(a["NATGANKER_REASON"], "confirmed by direct probes") || a["NATGANKER_CONFIRMED_MS"] != "30" {
		t.Errorf("acquire = %v", a)
	}
	if d, err := strconv.Atoi(a["NATGANKER_DETECTED_MS"]); err != nil || d < 1000 {
		t.Errorf("NATGANKER_DETECTED_MS = %q, want at least the second the owner was silent", a["NATGANKER_DETECTED_MS"])
	}
	if members[0]["NATGANKER_STATE"] != "alive" || members[1]["NATGANKER_STATE"] != "dead" || members[1]["NATGANKER_MEMBER"] != "i-a" {
		t.Errorf("member calls = %v", members)
	}
}
