package lab_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/lab"
)

// TestLab_Chaos runs two minutes of random faults (a new seed each run, logged; set
// NATGANKER_CHAOS_SEED to replay a run's draws, NATGANKER_CHAOS_MINUTES to run longer,
// NATGANKER_CHAOS_OUT to keep the report) against the real agents, and fails on every
// violation of the invariants the referee finds (lab/README.md, Chaos), with its timeline.
func TestLab_Chaos(t *testing.T) {
	requireLab(t)
	agentBin := buildAgent(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("NATGANKER_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("NATGANKER_CHAOS_SEED: %v", err)
		}
		seed = n
	}
	minutes := 2.0
	if s := os.Getenv("NATGANKER_CHAOS_MINUTES"); s != "" {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n <= 0 {
			t.Fatalf("NATGANKER_CHAOS_MINUTES: %q", s)
		}
		minutes = n
	}
	d := time.Duration(minutes * float64(time.Minute))
	t.Logf("chaos seed %d (NATGANKER_CHAOS_SEED=%d replays the draws), %s of faults", seed, seed, d)
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := lab.Chaos(ctx, lab.ChaosOptions{
		AgentBin: agentBin, Duration: d, Seed: seed, Dir: t.TempDir(), OutDir: os.Getenv("NATGANKER_CHAOS_OUT"),
		Progress: &progress,
		Logger:   hclog.New(&hclog.LoggerOptions{Name: "lab", Level: hclog.Warn, Output: testWriter{t}}),
	})
	if err != nil {
		t.Fatalf("chaos run (seed %d): %v\n%s", seed, err, progress.String())
	}
	t.Logf("faults as injected:\n%s\n%s", progress.String(), res.Summary())
	membership := 0
	for _, f := range res.Faults {
		if f.Kind != lab.FaultLoss && f.Kind != lab.FaultIMDSDown && !isEC2(f.Kind) {
			membership++
		}
	}
	// A run that injected next to nothing proves nothing.
	if membership < 2 || res.Samples < int(d/(200*time.Millisecond)) {
		t.Errorf("the run injected %d faults on the NATs and took %d samples: too few to judge anything", membership, res.Samples)
	}
	for _, v := range res.Violations {
		t.Errorf("seed %d: %s at %+.1fs (faults %v): %s\ntimeline:\n%s", seed, v.Invariant, v.AtS, v.Faults, v.Detail, v.Excerpt)
	}
	for _, p := range res.Problems {
		t.Errorf("seed %d: %s", seed, p)
	}
}

func isEC2(k lab.FaultKind) bool {
	switch k {
	case lab.FaultEC2Latency, lab.FaultEC25xx, lab.FaultEC2Throttle, lab.FaultEC2Outage, lab.FaultEC2Stale:
		return true
	}
	return false
}
