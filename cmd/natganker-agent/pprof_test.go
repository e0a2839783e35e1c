package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestProfiler_WritesProfilesOnStop(t *testing.T) {
	prefix := t.TempDir() + "/agent"
	t.Setenv(pprofEnv, prefix)
	p := startProfiling(hclog.NewNullLogger())
	p.stop()
	p.stop() // a deferred stop after the explicit one changes nothing
	for _, ext := range []string{"cpu", "heap", "allocs", "goroutine", "memstats"} {
		st, err := os.Stat(prefix + "." + ext)
		if err != nil {
			t.Fatalf("profile %s: %v", ext, err)
		}
		if st.Size() == 0 {
			t.Errorf("profile %s is empty", ext)
		}
	}
	g, err := os.ReadFile(prefix + ".goroutine")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(g), "goroutine profile: total ") {
		t.Errorf("goroutine profile is not the text form: %.60q", g)
	}
	m, err := os.ReadFile(prefix + ".memstats")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m), "# runtime.MemStats") || !strings.Contains(string(m), "# Stack = ") {
		t.Errorf("memstats does not hold the runtime's memory statistics: %.60q", m)
	}
}

func TestProfiler_OffWithoutEnv(t *testing.T) {
	t.Setenv(pprofEnv, "")
	dir := t.TempDir()
	t.Chdir(dir)
	startProfiling(hclog.NewNullLogger()).stop()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("profiles written without %s: %v", pprofEnv, entries)
	}
}

func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	t.Setenv("GOGC", "")
	tuneGC()
	if got := debug.SetGCPercent(100); got != idleGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, idleGCPercent)
	}
	t.Setenv("GOGC", "100")
	tuneGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100 in the environment: GC percent %d, want it left at 100", got)
	}
}

func TestTuneMemProfile(t *testing.T) {
	prev := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = prev })
	runtime.MemProfileRate = 512 * 1024
	t.Setenv(pprofEnv, t.TempDir()+"/agent")
	tuneMemProfile()
	if runtime.MemProfileRate != 512*1024 {
		t.Errorf("%s set: MemProfileRate %d, want it left at 512 KiB for the heap profile", pprofEnv, runtime.MemProfileRate)
	}
	t.Setenv(pprofEnv, "")
	tuneMemProfile()
	if runtime.MemProfileRate != 0 {
		t.Errorf("%s unset: MemProfileRate %d, want 0", pprofEnv, runtime.MemProfileRate)
	}
}
