package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// idleGCPercent is the garbage collector's target the agent runs with unless GOGC is set.
//
// An idle agent keeps about 1 MiB live, and Go's default (GOGC=100) lets the heap grow to
// its 4 MiB minimum before collecting, which the runtime then keeps mapped. At 50 the
// minimum is 2 MiB: about 2 MB less resident memory for a collection every few seconds
// instead of every ~5 s, each well under 2 ms of CPU (BenchmarkFootprint in agent/, and
// GODEBUG=gctrace=1). No memory limit is set: under a limit the collector may take up to
// half the CPU, which a takeover must not have to share.
const idleGCPercent = 50

// tuneGC applies idleGCPercent; GOGC in the environment takes precedence.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(idleGCPercent)
	}
}

// tuneMemProfile turns the runtime's sampling of allocations off unless the agent is asked
// for its profiles (pprofEnv). By default Go records the stack of one allocation in every
// 512 KiB, and the first record maps a 1.4 MiB hash table of stacks, whose pages the
// following records touch one by one: resident memory the agent never reads, and a stack
// walk for nothing every second or so at an idle agent's rate of allocation. Set before
// the configuration is read, so that little has been allocated before; the packages'
// initialization before main is sampled still.
func tuneMemProfile() {
	if os.Getenv(pprofEnv) == "" {
		runtime.MemProfileRate = 0
	}
}
