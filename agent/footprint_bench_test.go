package agent

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFootprint measures what an idle agent costs, from outside, as an operator would
// see it in top: n natganker-agent processes (n = 2, 4, 8) on 127.0.0.11… against one moto
// server, the default profile and default intervals, nothing changing. After they have all
// joined and warmed up it reads, over a window (NATGANKER_FOOTPRINT_WINDOW, default 60s):
//
//   - RSS: VmRSS of each process, sampled every 2 s; per agent the largest sample.
//   - CPU: utime+stime of each process (all threads) over the window, in % of one core.
//   - wakeups/s: the context switches of each process (all threads, voluntary and not) over
//     the window: each is a thread of the agent put to sleep or taken off a CPU, so about
//     one per wakeup of the agent.
//   - gossip bytes/s per node: memberlist's own counters of the bytes it sent (UDP and TCP,
//     after encryption, without IP/UDP/TCP headers; every byte one node sends another
//     receives), read from the Prometheus endpoint of the last agent. The endpoint is off by default and costs memory, so only
//     that agent has it and its RSS and CPU are left out of the figures; its goroutine
//     count (go_goroutines, the endpoint's own few included) is printed.
//
// The binary is built as make dist builds it (CGO_ENABLED=0, -trimpath, -ldflags "-s -w"). With
// NATGANKER_FOOTPRINT_OUT=dir/base the table is also written to base.md (make bench).
// NATGANKER_BENCH_BASELINE may name an earlier natganker-agent binary, built the same way:
// for each n its cluster runs beside this build's and both are measured over the same
// window, so that the load of a shared machine weighs on both alike. NATGANKER_FOOTPRINT_MEMBERS=2,4 chooses the member
// counts. NATGANKER_FOOTPRINT_PPROF=dir makes the first two agents of this build's
// clusters (the owner and the standby just below it) write their profiles (NATGANKER_PPROF,
// cmd/natganker-agent/pprof.go) to dir when the window ends, as
// dir/natganker-agent-<n>-owner.* and -standby.*.
//
//	NATGANKER_BENCH_BASELINE=<older binary> go test -run '^$' -bench Footprint -benchtime 1x -timeout 30m ./agent
func BenchmarkFootprint(b *testing.B) {
	window := time.Minute
	if s := os.Getenv("NATGANKER_FOOTPRINT_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("NATGANKER_FOOTPRINT_WINDOW: %v", err)
		}
		window = d
	}
	members := []int{2, 4, 8}
	if s := os.Getenv("NATGANKER_FOOTPRINT_MEMBERS"); s != "" {
		members = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 2 {
				b.Fatalf("NATGANKER_FOOTPRINT_MEMBERS: %q is not a member count of at least 2", f)
			}
			members = append(members, n)
		}
	}
	current := filepath.Join(b.TempDir(), "natganker-agent")
	// Built as make dist builds the packages' binaries: static, no cgo, stripped.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", current, "../cmd/natganker-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	type binary struct{ name, path string }
	builds := []binary{{"this build", current}}
	if base := os.Getenv("NATGANKER_BENCH_BASELINE"); base != "" {
		builds = append([]binary{{"baseline", base}}, builds...)
	}
	var rows []string
	started := time.Now()
	b.ResetTimer()
	for range b.N {
		for _, n := range members {
			// The builds' clusters run side by side and are measured over the same window,
			// so that the load of this shared machine weighs on both alike.
			var runs []*idleCluster
			for _, bl := range builds {
				runs = append(runs, startIdle(b, bl.path, n, bl.path == current))
			}
			// Let start-up settle: first EC2 reads, the first push-pull syncs, a few GC cycles.
			time.Sleep(15 * time.Second)
			for i, f := range measureIdle(b, runs, window) {
				bl := builds[i]
				rows = append(rows, fmt.Sprintf("| %d | %s | %s | %s | %s | %s | %s | %s–%s | %.0f | %.0f | %.0f | %.0f + %.0f |",
					n, bl.name, mb(median(f.rss)), mb(slices.Max(f.rss)), mb(median(f.anon)), mb(median(f.rss)-median(f.anon)),
					pct(median(f.cpu)), pct(slices.Min(f.cpu)), pct(slices.Max(f.cpu)), median(f.wakeups),
					f.goroutines, f.sentUDP+f.sentTCP, f.sentUDP, f.sentTCP))
				// Printed, not logged: the testing package keeps only 10 lines of a benchmark's log.
				fmt.Printf("%d members, %s (%s): RSS per agent %v MB, CPU per agent %v %%, wakeups/s per agent %.0f, heap in use %.1f MB (instrumented agent)\n",
					n, bl.name, bl.path, mbs(f.rss), pcts(f.cpu), f.wakeups, f.heapInuse/(1<<20))
			}
			for _, r := range runs {
				r.stop()
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	table := "| members | build | RSS median | RSS max | anon median | file (binary) | CPU median | CPU min–max | wakeups/s | goroutines | gossip B/s/node | UDP + TCP |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	fmt.Printf("idle footprint, window %s, RSS/CPU over the agents without the metrics endpoint:\n%s", window, table)
	if base := os.Getenv("NATGANKER_FOOTPRINT_OUT"); base != "" {
		var md strings.Builder
		fmt.Fprintf(&md, "# natganker idle footprint, %s\n\n", started.UTC().Format(time.RFC3339))
		fmt.Fprintf(&md, "n agent processes (the binary as make dist builds it) on 127.0.0.11… against one moto "+
			"server, default profile and intervals, nothing changing, measured over %s once all had joined and "+
			"settled for 15 s. RSS is VmRSS (median over the agents of each one's largest sample every 2 s), split "+
			"into anonymous memory and the binary's pages; CPU is utime+stime over the window in %% of one core; "+
			"wakeups/s are the context switches of all the agent's threads (median over the agents); "+
			"gossip is what memberlist counted sending (UDP and TCP, encrypted, without IP headers). The last agent "+
			"of each cluster serves /metrics for those counters and the goroutine count and is left out of RSS and CPU.\n\n", window)
		for _, bl := range builds {
			fmt.Fprintf(&md, "- %s: %s\n", bl.name, bl.path)
		}
		md.WriteString("\n" + table)
		if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// footprint is what measureIdle read of one cluster: rss, anon (bytes) and cpu (% of one
// core) per measured agent; the rest from the instrumented agent.
type footprint struct {
	rss, anon, cpu        []float64
	wakeups               []float64 // context switches per second
	goroutines, heapInuse float64
	sentUDP, sentTCP      float64 // gossip bytes sent per second
}

// idleCluster is n agent processes of one binary, left alone.
type idleCluster struct {
	c           *cluster
	procs       []*exec.Cmd
	metricsAddr string // of the last agent, the only one with the metrics endpoint
	profiling   bool
}

// startIdle starts n agents of bin and waits until the first owns the group and all see
// each other. With profile, the first two agents write their profiles when
// NATGANKER_FOOTPRINT_PPROF asks (a baseline binary may predate NATGANKER_PPROF).
func startIdle(b *testing.B, bin string, n int, profile bool) *idleCluster {
	prios := make([]int, n)
	for i := range prios {
		prios[i] = 100 * (n - i)
	}
	c := newCluster(b, prios...)
	last := n - 1
	l, err := net.Listen("tcp", c.addr(last)+":0")
	if err != nil {
		b.Fatal(err)
	}
	ic := &idleCluster{c: c, procs: make([]*exec.Cmd, n), metricsAddr: l.Addr().String()}
	l.Close()
	profDir := os.Getenv("NATGANKER_FOOTPRINT_PPROF")
	ic.profiling = profile && profDir != ""
	for i := range ic.procs {
		in := c.world.Instances[i]
		// The cluster's configuration shortens the reconcile and rejoin intervals for the
		// tests; the footprint is measured with the defaults.
		cfg := strings.NewReplacer(`reconcile_interval = "1s"`, "", `rejoin_interval = "1s"`, "").Replace(c.hcl(i))
		if i == last {
			cfg += fmt.Sprintf("telemetry {\n  prometheus_listen = %q\n}\n", ic.metricsAddr)
		}
		node := fmt.Sprintf("node {\n  instance_id = %q\n  region = %q\n  availability_zone = \"us-east-1a\"\n  local_ipv4 = %q\n  mac = \"0e:00:00:00:00:%02x\"\n  vpc_cidr = \"127.0.0.0/16\"\n  imds_endpoint = \"http://127.0.0.1:1\"\n}\nlog {\n  format = \"json\"\n}\n",
			in.ID, c.world.Region, c.addr(i), 0x10+i)
		file := filepath.Join(c.dir, fmt.Sprintf("agent-%d.hcl", i))
		if err := os.WriteFile(file, []byte(node+cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("agent-%d.log", i)))
		if err != nil {
			b.Fatal(err)
		}
		p := exec.Command(bin, "run", "-config", file)
		p.Stdout, p.Stderr = logf, logf
		if i < 2 && ic.profiling {
			p.Env = append(os.Environ(), fmt.Sprintf("NATGANKER_PPROF=%s/%s-%d-%s", profDir, filepath.Base(bin), n, []string{"owner", "standby"}[i]))
		}
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		logf.Close()
		ic.procs[i] = p
	}
	b.Cleanup(ic.stop)
	c.waitOwner(0, 30*time.Second)
	for i := range ic.procs {
		c.waitLogged(i, `"peer alive"`, n-1)
	}
	return ic
}

// stop kills the agents; it may be called more than once.
func (ic *idleCluster) stop() {
	for i, p := range ic.procs {
		if p != nil {
			p.Process.Signal(syscall.SIGKILL)
			p.Wait()
			ic.procs[i] = nil
		}
	}
}

// measureIdle measures the clusters over the same window. The last agent of each, which
// serves metrics, is left out of RSS and CPU.
func measureIdle(b *testing.B, runs []*idleCluster, window time.Duration) []footprint {
	fs := make([]footprint, len(runs))
	before := make([]map[string]float64, len(runs))
	cpu0 := make([][]float64, len(runs))
	switches0 := make([][]float64, len(runs))
	for r, ic := range runs {
		before[r] = scrapeSums(b, "http://"+ic.metricsAddr+"/metrics")
		for _, p := range ic.procs[:len(ic.procs)-1] {
			cpu0[r] = append(cpu0[r], cpuSeconds(b, p.Process.Pid))
			switches0[r] = append(switches0[r], contextSwitches(b, p.Process.Pid))
		}
		fs[r].rss = make([]float64, len(cpu0[r]))
		fs[r].anon = make([]float64, len(cpu0[r]))
	}
	start := time.Now()
	for time.Since(start) < window {
		for r, ic := range runs {
			for i, p := range ic.procs[:len(ic.procs)-1] {
				if rss, anon := rssBytes(b, p.Process.Pid); rss > fs[r].rss[i] {
					fs[r].rss[i], fs[r].anon[i] = rss, anon
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	took := time.Since(start).Seconds()
	for r, ic := range runs {
		f := &fs[r]
		for i, p := range ic.procs[:len(ic.procs)-1] {
			f.cpu = append(f.cpu, 100*(cpuSeconds(b, p.Process.Pid)-cpu0[r][i])/took)
			f.wakeups = append(f.wakeups, (contextSwitches(b, p.Process.Pid)-switches0[r][i])/took)
		}
		after := scrapeSums(b, "http://"+ic.metricsAddr+"/metrics")
		const udp, tcp = `natganker_memberlist_sent_bytes_total{protocol="udp"}`, `natganker_memberlist_sent_bytes_total{protocol="tcp"}`
		f.sentUDP = (after[udp] - before[r][udp]) / took
		f.sentTCP = (after[tcp] - before[r][tcp]) / took
		f.goroutines = after["go_goroutines"]
		f.heapInuse = after["go_memstats_heap_inuse_bytes"]
	}
	for _, ic := range runs {
		if ic.profiling {
			for i := range 2 {
				ic.procs[i].Process.Signal(syscall.SIGTERM)
				ic.c.waitLogged(i, `"profiles written"`, 1)
			}
		}
	}
	return fs
}

// scrapeSums reads a Prometheus text endpoint: each series' value, and for each metric the
// sum of its series under the bare name. (The agent
// package cannot import telemetry, which imports it.)
func scrapeSums(b *testing.B, url string) map[string]float64 {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// A label value may hold spaces; the value is the last field.
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series := line[:sp]
		if v, err := strconv.ParseFloat(line[sp+1:], 64); err == nil {
			sums[series] += v
			if name, _, labelled := strings.Cut(series, "{"); labelled {
				sums[name] += v
			}
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("scrape %s: %v", url, err)
	}
	return sums
}

// cpuSeconds is the CPU time (user and system, all threads) process pid has used.
func cpuSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces; the fields after it are counted from ")".
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const userHZ = 100 // the unit of /proc/*/stat times on Linux, whatever the kernel's HZ
	return (utime + stime) / userHZ
}

// contextSwitches is how many times the threads of process pid have been switched out
// (voluntarily, to wait, or not), counted over the threads alive now: a Go program keeps
// its threads, so over a window the difference counts every switch.
func contextSwitches(b *testing.B, pid int) float64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread has just ended
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if _, v, ok := strings.Cut(line, "ctxt_switches:"); ok {
				c, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += c
			}
		}
	}
	return n
}

// rssBytes is process pid's resident set size, and the anonymous part of it: what is not
// the binary's own pages (and shared libraries', if any) mapped from the page cache.
func rssBytes(b *testing.B, pid int) (rss, anon float64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	kB := func(field string) float64 {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				if err != nil {
					b.Fatalf("%s of %d: %q", field, pid, line)
				}
				return kb * 1024
			}
		}
		b.Fatalf("no %s for %d", field, pid)
		return 0
	}
	return kB("VmRSS"), kB("RssAnon")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mb(v float64) string  { return fmt.Sprintf("%.1f MB", v/(1<<20)) }
func pct(v float64) string { return fmt.Sprintf("%.2f%%", v) }

func mbs(v []float64) []string {
	var out []string
	for _, x := range v {
		out = append(out, fmt.Sprintf("%.1f", x/(1<<20)))
	}
	return out
}

func pcts(v []float64) []string {
	var out []string
	for _, x := range v {
		out = append(out, fmt.Sprintf("%.2f", x))
	}
	return out
}
