package lab

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stateDir records the root-namespace processes of a run, so that `down` can end them
// after a crash. Processes inside lab namespaces need no record: they are found through
// `ip netns pids`.
const stateDir = "/run/natganker-lab"

// proc is a child process the lab started and must end.
type proc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	err     error
}

// startProc starts cmd, sending its output to w (or discarding it), and records it for
// crash clean-up when it runs in the root namespace.
func startProc(name string, cmd *exec.Cmd, stdout, stderr io.Writer, root bool) (*proc, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	if root {
		recordPID(cmd.Process.Pid, filepath.Base(cmd.Path))
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Kill sends SIGKILL to the process group and waits for the process to be reaped.
func (p *proc) Kill() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// Stop sends SIGTERM and waits up to grace before killing.
func (p *proc) Stop(grace time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

var pidMu sync.Mutex

func recordPID(pid int, comm string) {
	pidMu.Lock()
	defer pidMu.Unlock()
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "pids"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%d %s\n", pid, comm)
}

// killRecorded ends the recorded root-namespace processes that are still running the
// program they were started as, then forgets them.
func killRecorded() {
	pidMu.Lock()
	defer pidMu.Unlock()
	path := filepath.Join(stateDir, "pids")
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + f[0] + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), f[1]) {
			continue
		}
		killPID(f[0])
	}
	_ = os.Remove(path)
}

// killPID sends SIGKILL to one process id given as text.
func killPID(s string) {
	pid, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || pid <= 1 || pid == os.Getpid() {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
