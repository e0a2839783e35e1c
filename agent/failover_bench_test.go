package agent

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFailover measures failover as a user would from outside: two natganker-agent
// processes on 127.0.0.11 and .12 against one moto server, default timings. It SIGKILLs the
// owner's process, measures how long moto takes to show the Elastic IP and all three routes
// on the survivor, restarts the killed agent, lets it fail back, waits a random 0-300 ms
// (so that kills fall anywhere in the probe cycle) and kills again. The distribution is
// printed, not a mean.
//
// NATGANKER_BENCH_BASELINE may name another natganker-agent binary (an earlier build): the
// same runs are then made with it first, in the same process, and both distributions and
// their ratio are printed side by side.
//
//	go test -run '^$' -bench Failover -benchtime 1x ./agent
func BenchmarkFailover(b *testing.B) {
	const runs = 15
	current := filepath.Join(b.TempDir(), "natganker-agent")
	build := exec.Command("go", "build", "-o", current, "../cmd/natganker-agent")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	type result struct {
		name string
		took []time.Duration
	}
	var results []result
	if base := os.Getenv("NATGANKER_BENCH_BASELINE"); base != "" {
		results = append(results, result{name: "baseline " + base})
	}
	results = append(results, result{name: "this build"})
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := range results {
			bin := current
			if strings.HasPrefix(results[i].name, "baseline ") {
				bin = strings.TrimPrefix(results[i].name, "baseline ")
			}
			results[i].took = append(results[i].took, killRuns(b, bin, runs)...)
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	var p50s []time.Duration
	for _, r := range results {
		took := slices.Clone(r.took)
		slices.Sort(took)
		p50, p90, max := took[len(took)/2], took[len(took)*9/10], took[len(took)-1]
		p50s = append(p50s, p50)
		var all []string
		for _, d := range took {
			all = append(all, fmt.Sprint(d.Milliseconds()))
		}
		b.Logf("%-12s owner SIGKILLed → EIP and 3 routes moved in moto, %d runs: min %d  p50 %d  p90 %d  max %d ms; sorted: %s",
			r.name, len(took), took[0].Milliseconds(), p50.Milliseconds(), p90.Milliseconds(), max.Milliseconds(), strings.Join(all, " "))
		if r.name == "this build" {
			b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
			b.ReportMetric(float64(max.Milliseconds()), "max-ms")
		}
	}
	if len(p50s) == 2 {
		b.Logf("p50 this build / baseline = %.2f", float64(p50s[1])/float64(p50s[0]))
	}
}

// killRuns runs a fresh two-agent cluster of bin processes and returns the failover time of
// each of runs kills of the owner.
func killRuns(b *testing.B, bin string, runs int) []time.Duration {
	c := newCluster(b, 200, 100)
	c.delay = time.Second
	procs := make([]*exec.Cmd, 2)
	start := func(i int) {
		in := c.world.Instances[i]
		file := filepath.Join(c.dir, fmt.Sprintf("agent-%d.hcl", i))
		node := fmt.Sprintf("node {\n  instance_id = %q\n  region = %q\n  availability_zone = \"us-east-1a\"\n  local_ipv4 = %q\n  mac = \"0e:00:00:00:00:1%d\"\n  vpc_cidr = \"127.0.0.0/16\"\n  imds_endpoint = \"http://127.0.0.1:1\"\n}\nlog {\n  format = \"json\"\n}\n",
			in.ID, c.world.Region, c.addr(i), i)
		if err := os.WriteFile(file, []byte(node+c.hcl(i)), 0o600); err != nil {
			b.Fatal(err)
		}
		logf, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("agent-%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		p := exec.Command(bin, "run", "-config", file)
		p.Stdout, p.Stderr = logf, logf
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		logf.Close()
		procs[i] = p
	}
	kill := func(i int) {
		if p := procs[i]; p != nil {
			p.Process.Signal(syscall.SIGKILL)
			p.Wait()
			procs[i] = nil
		}
	}
	b.Cleanup(func() {
		kill(0)
		kill(1)
		if b.Failed() {
			for i := range procs {
				out, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("agent-%d.log", i)))
				b.Logf("%s, agent %d log:\n%s", bin, i, out)
			}
		}
	})
	start(0)
	start(1)
	c.waitOwner(0, 20*time.Second)
	var took []time.Duration
	for i := 0; i < runs; i++ {
		// Both agents must be members again before the kill, or it measures a rejoin: nat2
		// has logged nat1 alive once per start, and not gone since.
		c.waitLogged(1, `"peer alive"`, i+1)
		c.waitPeerAlive(1)
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		killed := time.Now()
		kill(0)
		c.waitOwner(1, 20*time.Second)
		took = append(took, time.Since(killed))
		start(0)
		c.waitOwner(0, 30*time.Second)
	}
	return took
}

// waitPeerAlive waits until the latest peer line in agent i's log file says "peer alive".
func (c *cluster) waitPeerAlive(i int) {
	c.t.Helper()
	path := filepath.Join(c.dir, fmt.Sprintf("agent-%d.log", i))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.LastIndex(string(b), `"peer alive"`) > strings.LastIndex(string(b), `"peer gone"`) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("agent %d does not see its peer alive:\n%s", i, b)
		}
	}
}

// waitLogged waits until agent i's log file holds at least n lines containing s.
func (c *cluster) waitLogged(i int, s string, n int) {
	c.t.Helper()
	path := filepath.Join(c.dir, fmt.Sprintf("agent-%d.log", i))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), s) >= n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("agent %d logged %q fewer than %d times:\n%s", i, s, n, b)
		}
	}
}
