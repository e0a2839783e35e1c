package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/config"
)

// Hooks are the operator's programs run on events, like keepalived's notify scripts: the
// agent never waits for them. Event only queues a run (or drops it, with a warning, when the
// queue is full) and returns; each queued run starts once, in its own process group, and is
// killed with its whole group after the configured timeout. Acquire and release runs go
// through one queue, in the order of the events, so a script sees a group taken before it
// sees it released; member runs through another, so a slow member hook delays no ownership
// hook.

const (
	// hookQueueLen is how many runs may wait in each queue.
	hookQueueLen = 64
	// hookOutputMax bounds how much of a run's output (stdout and stderr) is logged.
	hookOutputMax = 4096
	// hookCloseGrace bounds how long Close lets queued and running hooks finish (a release
	// hook on shutdown, typically) before killing them.
	hookCloseGrace = 5 * time.Second
	// hookWaitDelay bounds the wait for a hook's output after it exited or was killed, when
	// a process it left behind outside its group keeps the output open.
	hookWaitDelay = 2 * time.Second
)

// Hook results, as HookObserver is told them.
const (
	HookOK      = "ok"
	HookFailed  = "failed"
	HookTimeout = "timeout"
	HookDropped = "dropped"
)

// HookObserver is told how each hook run ended (HookOK, HookFailed, HookTimeout, or
// HookDropped when the queue was full); hook is "on_acquire", "on_release" or "on_member".
type HookObserver interface {
	HookRun(hook, result string)
}

// HookRunner runs the hooks of a config.Hooks block. It is an EventSink.
type HookRunner struct {
	cfg      config.Hooks
	node     string
	log      hclog.Logger
	observer HookObserver

	lanes [2]chan hookRun // ownership, member

	mu     sync.RWMutex
	closed bool

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	started   bool
	closeOnce sync.Once
}

var _ EventSink = (*HookRunner)(nil)

type hookRun struct {
	hook    string
	argv    []string
	env     []string
	at      time.Time
	timeout time.Duration
}

// NewHookRunner prepares the hooks of cfg for the node named node; observer may be nil. It
// starts nothing.
func NewHookRunner(cfg config.Hooks, node string, observer HookObserver, logger hclog.Logger) *HookRunner {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	h := &HookRunner{cfg: withHookDefaults(cfg), node: node, log: logger.Named("hooks"), observer: observer}
	for i := range h.lanes {
		h.lanes[i] = make(chan hookRun, hookQueueLen)
	}
	return h
}

func withHookDefaults(cfg config.Hooks) config.Hooks {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return cfg
}

// ReloadHooks replaces the hooks for the events from now on; runs already queued keep the
// hooks of their event.
func (h *HookRunner) ReloadHooks(cfg config.Hooks) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cfg = withHookDefaults(cfg)
}

// Start starts running queued hooks. A hook's life is bounded by its timeout and by Close,
// not by ctx: a release hook queued while the agent shuts down still runs.
func (h *HookRunner) Start(ctx context.Context) error {
	h.ctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	h.started = true
	for _, lane := range h.lanes {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for r := range lane {
				if h.ctx.Err() != nil {
					h.log.Warn("hook not run: the agent is stopping", "hook", r.hook, "program", r.argv[0])
					h.result(r.hook, HookDropped)
					continue
				}
				h.run(r)
			}
		}()
	}
	return nil
}

// Close stops taking events, lets the queued and running hooks finish for up to
// hookCloseGrace, then kills what still runs. Safe to call more than once.
func (h *HookRunner) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		for _, lane := range h.lanes {
			close(lane)
		}
		h.mu.Unlock()
		if !h.started {
			return
		}
		done := make(chan struct{})
		go func() {
			h.wg.Wait()
			close(done)
		}()
		t := time.NewTimer(hookCloseGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			h.log.Warn("hooks still running at shutdown: killing them", "grace", hookCloseGrace.String())
		}
		h.cancel()
		<-done
	})
	return nil
}

// Event queues the hooks e calls for. It never blocks: with the queue full the run is
// dropped and a warning logged.
func (h *HookRunner) Event(e Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var hook string
	var argv []string
	lane := 0
	switch e.Kind {
	case EventAcquire:
		hook, argv = "on_acquire", h.cfg.OnAcquire
	case EventRelease:
		hook, argv = "on_release", h.cfg.OnRelease
	case EventMember:
		if e.State == "" {
			return // no longer listed: nothing happened to the peer
		}
		hook, argv, lane = "on_member", h.cfg.OnMember, 1
	default:
		return
	}
	if len(argv) == 0 {
		return
	}
	r := hookRun{hook: hook, argv: argv, env: h.env(e), at: e.At, timeout: h.cfg.Timeout}
	if h.closed {
		h.log.Warn("hook not run: the agent is stopping", "hook", hook, "program", argv[0])
		h.result(hook, HookDropped)
		return
	}
	select {
	case h.lanes[lane] <- r:
	default:
		h.log.Warn("hook queue full: event dropped, hook not run", "hook", hook, "program", argv[0],
			"event", string(e.Kind), "group", e.Group, "member", e.Member, "queued", hookQueueLen)
		h.result(hook, HookDropped)
	}
}

// env is the hook's environment: the agent's own, and the event's NATGANKER_* variables.
func (h *HookRunner) env(e Event) []string {
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	env := append(os.Environ(),
		"NATGANKER_EVENT="+string(e.Kind),
		"NATGANKER_NODE="+h.node,
		"NATGANKER_TIME="+at.UTC().Format(time.RFC3339Nano),
	)
	set := func(k, v string) { env = append(env, "NATGANKER_"+k+"="+v) }
	if e.Kind == EventMember {
		set("MEMBER", e.Member)
		set("STATE", e.State)
		set("HEALTHY", strconv.FormatBool(e.Healthy))
		set("REASON", e.Reason)
		return env
	}
	set("GROUP", e.Group)
	set("FROM", e.From)
	set("TO", e.To)
	set("REASON", e.Reason)
	set("CAUSE", e.Cause)
	if t := e.Takeover; t != nil {
		ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
		set("DETECTED_MS", ms(t.Detected))
		set("CONFIRMED_MS", ms(t.Confirmed))
		set("EIP_MS", ms(t.EIPMoved))
		set("ROUTES_MS", ms(t.RoutesMoved))
		set("VERIFIED_MS", ms(t.Verified))
	}
	return env
}

// run runs one hook to its end or its timeout, and logs how it went with its output.
func (h *HookRunner) run(r hookRun) {
	ctx, cancel := context.WithTimeout(h.ctx, r.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.argv[0], r.argv[1:]...)
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the hook's whole process group: a script's children must not outlive it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = hookWaitDelay
	out := &boundedBuffer{max: hookOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	args := []any{"hook", r.hook, "program", r.argv[0], "took", time.Since(start).Round(time.Millisecond).String(),
		"queued_for", start.Sub(r.at).Round(time.Millisecond).String(), "output", out.String()}
	switch {
	case err == nil:
		h.log.Info("hook ran", args...)
		h.result(r.hook, HookOK)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		h.log.Warn("hook timed out: killed its process group", append(args, "timeout", r.timeout.String())...)
		h.result(r.hook, HookTimeout)
	case h.ctx.Err() != nil:
		h.log.Warn("hook killed: the agent is stopping", append(args, "error", err)...)
		h.result(r.hook, HookFailed)
	default:
		h.log.Warn("hook failed", append(args, "error", err)...)
		h.result(r.hook, HookFailed)
	}
}

func (h *HookRunner) result(hook, result string) {
	if h.observer != nil {
		h.observer.HookRun(hook, result)
	}
}

// boundedBuffer keeps the first max bytes written to it and counts the rest.
type boundedBuffer struct {
	mu      sync.Mutex
	buf     []byte
	max     int
	dropped int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - len(b.buf)
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		b.buf = append(b.buf, p[:room]...)
	}
	b.dropped += len(p) - max(room, 0)
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("%s…(%d more bytes not logged)", b.buf, b.dropped)
	}
	return string(b.buf)
}
