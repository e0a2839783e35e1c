package conntrack

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSync measures replication as the agent does it, in one process: flows created in
// a network namespace's conntrack table (with their NAT mapping, as masquerade makes them)
// are followed by Watch, batched by a Replicator every 100 ms and applied to a standby's
// Table through the wire format. For N = 1000, 10000 and 50000 concurrent flows
// (NATGANKER_SYNC_FLOWS=1000,… picks others) it prints:
//
//   - lag: from the create request's answer to the flow being in the standby's table, p50,
//     p99 and max, over the N flows created at 5000 a second;
//
//   - cost, over a 20 s window at N flows with 1/30 of them replaced each second (flows
//     that live 30 s) and one full resync: CPU of the whole process (watcher, replicator
//     and table together) in % of one core, bytes/s the replicator sent (deltas, and the
//     resync spread over its interval of 60 s), and the heap the standby's table holds.
//
//     go test -run '^$' -bench Sync -benchtime 1x ./agent/conntrack/
func BenchmarkSync(b *testing.B) {
	sizes := []int{1000, 10000, 50000}
	if s := os.Getenv("NATGANKER_SYNC_FLOWS"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 60000 {
				b.Fatalf("NATGANKER_SYNC_FLOWS: %q is not a flow count of 1 to 60000", f)
			}
			sizes = append(sizes, n)
		}
	}
	const window, createRate, resyncEvery = 20 * time.Second, 5000, time.Minute
	var rows []string
	for range b.N {
		for _, n := range sizes {
			rows = append(rows, syncRun(b, n, window, createRate, resyncEvery))
		}
	}
	b.ReportMetric(0, "ns/op")
	fmt.Printf("connection sync, one process (watcher + replicator + table), %s window, flows living 30 s, resync every %s:\n"+
		"| flows | lag p50 | lag p99 | lag max | CPU (%% of a core) | bytes/s sent | table heap |\n|---:|---:|---:|---:|---:|---:|---:|\n%s\n",
		window, resyncEvery, strings.Join(rows, "\n"))
}

func syncRun(b *testing.B, n int, window time.Duration, createRate int, resyncEvery time.Duration) string {
	netns, nsPath := newNamedNamespace(b)
	in, err := NewInstaller(netns)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	var (
		mu      sync.Mutex
		created = map[netip.AddrPort]time.Time{}
		lags    []time.Duration
		sent    int
	)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	table := NewTable(1 << 20)
	rep := NewReplicator("i-0123456789abcdef0", func(_ string, msg []byte, _ bool) error {
		m, err := Decode(msg)
		if err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		sent += len(msg)
		for _, r := range m.Records {
			if t, ok := created[r.Flow.Src]; ok && r.Op == OpPut {
				lags = append(lags, now.Sub(t))
				delete(created, r.Flow.Src)
			}
		}
		mu.Unlock()
		return table.Apply(m, now)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchErr := make(chan error, 1)
	go func() { watchErr <- Watch(ctx, netns, rep.Note) }()
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := rep.Flush([]string{"standby"}); err != nil {
					b.Error(err)
				}
			}
		}
	}()
	flow := benchFlow
	install := func(f Flow) {
		if err := in.Install(f); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		created[f.Src] = time.Now()
		mu.Unlock()
	}
	// Wait for the watcher: a first flow must come through.
	start := 0
	for i := 0; ; i++ {
		install(flow(i))
		start++
		deadline := time.Now().Add(500 * time.Millisecond)
		for table.Stats().Flows == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if table.Stats().Flows > 0 {
			break
		}
		if i == 20 {
			b.Fatal("the watcher never reported a flow")
		}
	}
	// Flows created before the watcher listened are never reported.
	missed := start - table.Stats().Flows
	mu.Lock()
	lags = nil
	mu.Unlock()
	pace := time.NewTicker(time.Second / time.Duration(createRate/100))
	for i := start; i < n; {
		<-pace.C
		for j := 0; j < 100 && i < n; j++ {
			install(flow(i))
			i++
		}
	}
	pace.Stop()
	for deadline := time.Now().Add(30 * time.Second); table.Stats().Flows < max(n, start)-missed; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the table holds %d of %d flows (watch ended: %v)", table.Stats().Flows, max(n, start)-missed, len(watchErr) > 0)
		}
	}
	mu.Lock()
	ls := slices.Clone(lags)
	mu.Unlock()
	slices.Sort(ls)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)

	// Steady state: replace n/30 flows a second, one resync, for the window.
	mu.Lock()
	sent = 0
	mu.Unlock()
	cpu0 := cpuTime()
	t0 := time.Now()
	snap, err := Snapshot(netns)
	if err != nil {
		b.Fatal(err)
	}
	if err := rep.Resync([]string{"standby"}, snap); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	resyncBytes := sent
	mu.Unlock()
	// The churn runs in a child process, so that this process's CPU is the sync's alone.
	churn := exec.Command(os.Args[0], "-test.run=^$")
	churn.Env = append(os.Environ(), churnEnv+"="+fmt.Sprintf("%s %d %d %d %d", nsPath, 0, max(n, start), max(1, n/30), window.Milliseconds()))
	if out, err := churn.CombinedOutput(); err != nil {
		b.Fatalf("churn: %v\n%s", err, out)
	}
	elapsed := time.Since(t0)
	cpu := cpuTime() - cpu0
	mu.Lock()
	deltaBytes := sent - resyncBytes
	mu.Unlock()
	cancel()
	<-flushDone
	bytesPerSec := float64(deltaBytes)/elapsed.Seconds() + float64(resyncBytes)/resyncEvery.Seconds()
	pct := func(q float64) time.Duration { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
	return fmt.Sprintf("| %d | %.0f ms | %.0f ms | %.0f ms | %.2f%% | %.0f | %.1f MB |", n,
		ms(pct(0.5)), ms(pct(0.99)), ms(ls[len(ls)-1]), 100*cpu.Seconds()/elapsed.Seconds(), bytesPerSec, float64(heap)/(1<<20))
}

// benchFlow is the benchmark's i-th flow: sources spread over 198.18.128.0/17 and ports,
// every flow its own.
func benchFlow(i int) Flow {
	src := netip.AddrFrom4([4]byte{198, 18, 128 + byte(i>>16&0x7f), byte(i >> 8)})
	return Flow{Proto: TCP, Src: netip.AddrPortFrom(src, uint16(1024+i&0xff)), Dst: netip.MustParseAddrPort("198.19.0.1:443"),
		NAT: netip.AddrPortFrom(netip.MustParseAddr("198.18.1.11"), uint16(1024+i%60000)), Status: StatusSeenReply | StatusAssured,
		TCPState: TCPEstablished, Timeout: 3600}
}

// churnEnv makes the test binary the churn helper: "netns-path oldest next per-second
// milliseconds": it deletes the oldest flows and creates new ones, per-second of each a second.
const churnEnv = "NGCT_CHURN"

func TestMain(m *testing.M) {
	if spec := os.Getenv(churnEnv); spec != "" {
		if err := runChurn(spec); err != nil {
			fmt.Fprintln(os.Stderr, "churn:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChurn(spec string) error {
	var path string
	var oldest, next, perSec int
	var millis int64
	if _, err := fmt.Sscanf(spec, "%s %d %d %d %d", &path, &oldest, &next, &perSec, &millis); err != nil {
		return fmt.Errorf("spec %q: %w", spec, err)
	}
	d := time.Duration(millis) * time.Millisecond
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	in, err := NewInstaller(int(f.Fd()))
	if err != nil {
		return err
	}
	defer in.Close()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-t.C
		for range max(1, perSec/10) {
			if err := deleteFlowErr(int(f.Fd()), benchFlow(oldest)); err != nil {
				return err
			}
			oldest++
			if err := in.Install(benchFlow(next)); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
