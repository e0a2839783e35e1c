package lab

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcStat is what /proc shows of an agent process from outside: resident memory, threads
// (the agent does not export its goroutine count; a leak of goroutines blocked in syscalls
// shows as threads, and one of sockets or files as descriptors) and open descriptors.
type ProcStat struct {
	At      time.Time `json:"-"`
	RSSKiB  int       `json:"rss_kib"`
	Threads int       `json:"threads"`
	FDs     int       `json:"fds"`
}

func (p ProcStat) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %d threads, %d fds", float64(p.RSSKiB)/1024, p.Threads, p.FDs)
}

// readProcStat reads one process's figures.
func readProcStat(pid int) (ProcStat, error) {
	st := ProcStat{At: time.Now()}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			st.RSSKiB, _ = strconv.Atoi(fields[0])
		case "Threads":
			st.Threads, _ = strconv.Atoi(fields[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return st, err
	}
	st.FDs = len(fds)
	return st, nil
}

// AgentResources follows one agent process through a run.
type AgentResources struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"-"`
	// Lived is how long it was watched, Alive whether it ran at the end of the run.
	Lived time.Duration `json:"-"`
	Alive bool          `json:"alive_at_end"`
	// First is taken once the agent has settled after its start, Last at the end (or the
	// last reading before it was stopped), Max holds each figure's maximum.
	First ProcStat `json:"first"`
	Last  ProcStat `json:"last"`
	Max   ProcStat `json:"max"`
}

// resourceBook samples the agent processes of a run.
type resourceBook struct {
	mu    sync.Mutex
	procs map[int]*AgentResources
}

// settleAfterStart: the first reading of an agent waits until it has joined and read EC2.
const settleAfterStart = 3 * time.Second

// sample reads every running agent process now.
func (b *resourceBook) sample(l *Lab) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.procs == nil {
		b.procs = map[int]*AgentResources{}
	}
	for _, r := range b.procs {
		r.Alive = false
	}
	for _, h := range []string{Nat1, Nat2} {
		p := l.nodeProc(h)
		if p == nil || p.Exited() {
			continue
		}
		pid := p.cmd.Process.Pid
		r := b.procs[pid]
		if r == nil {
			r = &AgentResources{Host: h, PID: pid, Started: p.started}
			b.procs[pid] = r
		}
		r.Alive = true
		if time.Since(p.started) < settleAfterStart {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue
		}
		if r.First.At.IsZero() {
			r.First = st
		}
		r.Last = st
		r.Lived = st.At.Sub(r.Started)
		r.Max.RSSKiB = max(r.Max.RSSKiB, st.RSSKiB)
		r.Max.Threads = max(r.Max.Threads, st.Threads)
		r.Max.FDs = max(r.Max.FDs, st.FDs)
	}
}

// list returns the processes that were read at least once, oldest first.
func (b *resourceBook) list() []AgentResources {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []AgentResources
	for _, r := range b.procs {
		if !r.First.At.IsZero() {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}
