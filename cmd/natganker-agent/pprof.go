package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/hashicorp/go-hclog"
)

// pprofEnv names a path prefix: when set, run profiles the agent and writes, when the stop
// signal arrives (before the shutdown, so that they show the agent as it ran):
// PREFIX.cpu (CPU profile from the end of start-up), PREFIX.heap (live heap after a GC),
// PREFIX.allocs (every allocation since start), PREFIX.goroutine (the goroutines, as
// text) and PREFIX.memstats (the heap profile as text, which ends with runtime.MemStats:
// where the memory the runtime holds goes, heap, stacks and its own structures). It is
// meant for measuring the agent (BenchmarkFootprint in agent/), not for production: it
// opens no port and changes nothing else but the sampling of allocations, which stays on
// (memory.go).
const pprofEnv = "NATGANKER_PPROF"

// profiler writes the profiles pprofEnv asks for; the zero value (not asked) does nothing.
type profiler struct {
	prefix string
	cpu    *os.File
	logger hclog.Logger
}

// startProfiling starts the CPU profile when pprofEnv is set.
func startProfiling(logger hclog.Logger) *profiler {
	p := &profiler{prefix: os.Getenv(pprofEnv), logger: logger}
	if p.prefix == "" {
		return p
	}
	f, err := os.Create(p.prefix + ".cpu")
	if err != nil {
		logger.Error("start profiling", "error", err)
		p.prefix = ""
		return p
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		logger.Error("start profiling", "error", err)
		f.Close()
		p.prefix = ""
		return p
	}
	p.cpu = f
	logger.Info("profiling", "prefix", p.prefix)
	return p
}

// stop ends the CPU profile and writes the others; it may be called more than once.
func (p *profiler) stop() {
	if p.prefix == "" {
		return
	}
	pprof.StopCPUProfile()
	if err := p.cpu.Close(); err != nil {
		p.logger.Error("write profile", "error", err)
	}
	runtime.GC() // the heap profile shows the state as of the latest GC
	for _, w := range []struct {
		ext, name string
		debug     int
	}{{"heap", "heap", 0}, {"allocs", "allocs", 0}, {"goroutine", "goroutine", 1}, {"memstats", "heap", 1}} {
		if err := writeProfile(p.prefix+"."+w.ext, w.name, w.debug); err != nil {
			p.logger.Error("write profile", "error", err)
		}
	}
	p.logger.Info("profiles written", "prefix", p.prefix)
	p.prefix = ""
}

// writeProfile writes the profile called name to path; debug 0 is pprof's binary form, 1
// text.
func writeProfile(path, name string, debug int) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s profile: %w", name, err)
	}
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		f.Close()
		return fmt.Errorf("write %s profile: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s profile: %w", name, err)
	}
	return nil
}
