package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/ec2/ec2test"
)

// BenchOptions configure a benchmark run.
type BenchOptions struct {
	AgentBin   string
	HelperCmd  []string
	Mechanisms []Mechanism
	Runs       int // hard kills per mechanism
	SpotRuns   int // spot interruption notices to the owner (natganker only; spot.go)
	// FailbackDelay, when set, replaces the agents' default failback_delay (30s): the pair
	// settles back on nat1 sooner between runs. Detection and handoffs do not depend on it.
	FailbackDelay time.Duration
	Soak          time.Duration // per loss rate and mechanism
	Losses        []int         // percent dropped between the NATs
	// Stall, when set, is how long the owner's failover process is stalled again and again
	// per mechanism (stallSoak): a process the kernel still answers for is not dead.
	Stall       time.Duration
	Latency     time.Duration // added to every EC2 call
	ExtraTables int
	OutDir      string
	// Stamp names the result files (bench-<Stamp>.*); empty means the start time, as
	// 20060102T150405Z. make bench gives every part of one report the same stamp.
	Stamp string
	// NoConntrackSync runs the agents with connection sync off: the control.
	NoConntrackSync bool
	Logger          hclog.Logger
	Progress        io.Writer
}

// BenchResult is everything a benchmark measured.
type BenchResult struct {
	Started   time.Time                    `json:"started"`
	Stamp     string                       `json:"stamp"`
	Machine   map[string]string            `json:"machine"`
	Settings  map[string]string            `json:"settings"`
	Failovers map[Mechanism][]RunResult    `json:"failovers"`
	Soaks     map[Mechanism][]SoakResult   `json:"soaks"`
	Errors    map[Mechanism][]string       `json:"errors,omitempty"`
	Calls     map[Mechanism]map[string]int `json:"ec2_calls,omitempty"`
	// Handoffs are the planned handoffs on a spot interruption notice (spot.go).
	Handoffs map[Mechanism][]HandoffResult `json:"handoffs,omitempty"`
}

// RunResult is one hard kill, in seconds.
type RunResult struct {
	Killed      string  `json:"killed"`
	Detection   float64 `json:"detection_s"`
	Converged   float64 `json:"ec2_converged_s"`
	Outage      float64 `json:"client_outage_s"`
	Lost        int     `json:"probes_lost"`
	TCPSurvived bool    `json:"tcp_survived"`
	// Streams says, per kind of server-side stream, whether it survived.
	Streams map[string]bool `json:"streams_survived,omitempty"`
}

// SoakResult is one loss soak.
type SoakResult struct {
	// Kind is "stall" for a stall soak, "" for a loss soak.
	Kind            string  `json:"kind,omitempty"`
	LossPercent     int     `json:"loss_percent"`
	Stalls          int     `json:"stalls,omitempty"`
	LongestStall    float64 `json:"longest_stall_s,omitempty"`
	Seconds         float64 `json:"seconds"`
	OwnerChanges    int     `json:"owner_changes"`
	Takeovers       int     `json:"takeovers"`       // agent takeover lines or keepalived MASTER entries
	FalseFailovers  int     `json:"false_failovers"` // takeovers by the standby (nat2)
	DeclaredDead    int     `json:"declared_dead,omitempty"`
	ClientOutageMax float64 `json:"client_outage_max_s"`
}

// Bench runs hard kills and loss soaks for each mechanism on a fresh lab and writes the
// results (Markdown table, JSON, SVG plot) under OutDir.
func Bench(ctx context.Context, o BenchOptions) (*BenchResult, error) {
	if o.OutDir != "" {
		if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
			return nil, fmt.Errorf("create results dir: %w", err)
		}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	res := &BenchResult{Started: time.Now(), Stamp: o.Stamp, Machine: machine(), Failovers: map[Mechanism][]RunResult{},
		Soaks: map[Mechanism][]SoakResult{}, Errors: map[Mechanism][]string{}, Calls: map[Mechanism]map[string]int{}}
	if res.Stamp == "" {
		res.Stamp = res.Started.UTC().Format("20060102T150405Z")
	}
	res.Settings = map[string]string{
		"runs":               fmt.Sprint(o.Runs),
		"spot_runs":          fmt.Sprint(o.SpotRuns),
		"soak":               o.Soak.String(),
		"losses":             fmt.Sprint(o.Losses),
		"stall_soak":         o.Stall.String(),
		"ec2_latency":        o.Latency.String(),
		"ec2_throttling":     "mutating burst 50 refill 5/s, describe burst 100 refill 20/s",
		"route_tables":       fmt.Sprint(1 + o.ExtraTables),
		"probe_interval":     ProbeInterval.String(),
		"conntrack_sync":     fmt.Sprint(!o.NoConntrackSync),
		"traffic":            "UDP probes every 10ms; a TCP echo the client writes to every 100ms; a push stream (512 B every 20ms) and a download (1 MB/s) the client only reads",
		"natganker_config":   natgankerSettings(o.FailbackDelay),
		"keepalived_config":  "VRRP unicast over the private segment, advert_int 1, preempt, notify_master → aws CLI",
		"keepalived_version": firstLine(runQuiet("keepalived", "--version")),
		"aws_cli_version":    firstLine(runQuiet("aws", "--version")),
		"moto_version":       firstLine(runQuiet("python3", "-c", "import moto; print(moto.__version__)")),
		"agent":              o.AgentBin,
	}
	for _, mech := range o.Mechanisms {
		if err := benchMechanism(ctx, o, mech, res); err != nil {
			res.Errors[mech] = append(res.Errors[mech], err.Error())
			fmt.Fprintf(o.Progress, "%s: %v\n", mech, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err := res.Write(o.OutDir); err != nil {
		return res, err
	}
	return res, nil
}

func benchMechanism(ctx context.Context, o BenchOptions, mech Mechanism, res *BenchResult) error {
	tl := NewTimeline(nil, time.Now())
	l := New(Options{AgentBin: o.AgentBin, HelperCmd: o.HelperCmd, ExtraTables: o.ExtraTables, Logger: o.Logger, Timeline: tl, FailbackDelay: o.FailbackDelay,
		NoConntrackSync: o.NoConntrackSync,
		Proxy:           &ec2test.ProxyOptions{Latency: o.Latency, Throttle: true}})
	defer l.Close()
	defer func() {
		if o.OutDir == "" {
			return
		}
		if f, err := os.Create(filepath.Join(o.OutDir, "bench-"+res.Stamp+"-timeline-"+string(mech)+".txt")); err == nil {
			tl.Print(f, time.Time{}, time.Time{})
			f.Close()
		}
	}()
	if err := l.Up(ctx); err != nil {
		return err
	}
	if err := l.StartMechanism(ctx, mech, 60*time.Second); err != nil {
		return err
	}
	tr, err := l.StartTraffic(ctx)
	if err != nil {
		return err
	}
	defer func() { res.Calls[mech] = l.ProxyStats() }()
	for i := 0; i < o.Runs; i++ {
		owner, err := l.settle(ctx, mech, 90*time.Second)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		// The survivor was restarted by the previous run, so without a random pause every
		// kill would land at the same phase of its probe or advert timer.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(time.Second)))):
		}
		f, err := l.HardKill(ctx, tr, owner, mech, 90*time.Second)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		r := RunResult{Killed: owner, Detection: f.Detection().Seconds(), Converged: f.Converged().Seconds(),
			Outage: f.Outage.Duration().Seconds(), Lost: f.Outage.Lost, TCPSurvived: f.TCPSurvived, Streams: f.Streams}
		res.Failovers[mech] = append(res.Failovers[mech], r)
		fmt.Fprintf(o.Progress, "%-10s run %2d/%d: killed %s  detection %.2fs  ec2 converged %.2fs  client outage %.2fs  survived: echo %v, push %v, download %v\n",
			mech, i+1, o.Runs, owner, r.Detection, r.Converged, r.Outage, r.TCPSurvived, r.Streams["push"], r.Streams["download"])
		if err := l.ReviveHost(ctx, owner); err != nil {
			return err
		}
	}
	if mech == Natganker && o.SpotRuns > 0 {
		if err := benchSpot(ctx, o, l, tr, res); err != nil {
			return err
		}
	}
	for _, loss := range o.Losses {
		if o.Soak <= 0 {
			break
		}
		// Soak from the preferred owner with no failback pending, so every change counts.
		if _, err := l.WaitOwner(ctx, Nat1, 120*time.Second); err != nil {
			return fmt.Errorf("soak %d%%: %w", loss, err)
		}
		if _, err := l.settle(ctx, mech, 90*time.Second); err != nil {
			return fmt.Errorf("soak %d%%: %w", loss, err)
		}
		s, err := l.soak(ctx, tr, mech, loss, o.Soak)
		if err != nil {
			return fmt.Errorf("soak %d%%: %w", loss, err)
		}
		res.Soaks[mech] = append(res.Soaks[mech], s)
		fmt.Fprintf(o.Progress, "%-10s soak %d%% loss for %s: %d false failovers, %d owner changes in EC2, longest client gap %.2fs\n",
			mech, loss, o.Soak, s.FalseFailovers, s.OwnerChanges, s.ClientOutageMax)
	}
	if o.Stall > 0 {
		if _, err := l.WaitOwner(ctx, Nat1, 120*time.Second); err != nil {
			return fmt.Errorf("stall soak: %w", err)
		}
		if _, err := l.settle(ctx, mech, 90*time.Second); err != nil {
			return fmt.Errorf("stall soak: %w", err)
		}
		s, err := l.stallSoak(ctx, tr, mech, o.Stall)
		if err != nil {
			return fmt.Errorf("stall soak: %w", err)
		}
		res.Soaks[mech] = append(res.Soaks[mech], s)
		fmt.Fprintf(o.Progress, "%-10s stall soak for %s: owner stalled %d times (longest %.1fs): %d false failovers, %d owner changes in EC2, longest client gap %.2fs\n",
			mech, o.Stall, s.Stalls, s.LongestStall, s.FalseFailovers, s.OwnerChanges, s.ClientOutageMax)
	}
	return nil
}

// settle waits until both NATs run mech, moto shows one owner, and nothing changed for a
// second (keepalived preempts after a revival, natganker fails back only after its
// delay); it returns the owner.
func (l *Lab) settle(ctx context.Context, mech Mechanism, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		owner, err := l.settled(ctx, mech)
		if err == nil {
			return owner, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("wait for the pair to settle: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *Lab) settled(ctx context.Context, mech Mechanism) (string, error) {
	owner := l.Owner()
	if owner == "" {
		return "", fmt.Errorf("EIP and routes split between the NATs")
	}
	ch := l.OwnerChanges()
	if len(ch) > 0 && time.Since(ch[len(ch)-1].At) < time.Second {
		return "", fmt.Errorf("owner changed less than a second ago")
	}
	switch mech {
	case Natganker:
		if err := l.agentsReady(ctx); err != nil {
			return "", err
		}
	case Keepalived:
		last := map[string]string{}
		var lastAt time.Time
		for _, t := range l.Transitions() {
			last[t.Host] = t.State
			lastAt = t.At
		}
		// keepalived preempts: with both up, the higher priority (nat1) must be MASTER.
		if owner != Nat1 || last[owner] != "MASTER" || last[Peer(owner)] != "BACKUP" {
			return "", fmt.Errorf("keepalived: owner %s is %q, peer %q", owner, last[owner], last[Peer(owner)])
		}
		starts, dones := l.NotifyTimes(owner)
		if len(starts) != len(dones) || time.Since(lastAt) < time.Second {
			return "", fmt.Errorf("keepalived notify script still running")
		}
	}
	return owner, nil
}

// Stats summarises one metric.
type Stats struct {
	N             int
	P50, P95, Max float64
}

func summarize(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		if i < 0 {
			i = 0
		}
		return s[i]
	}
	return Stats{N: len(s), P50: rank(0.50), P95: rank(0.95), Max: s[len(s)-1]}
}

// Table renders the results as Markdown.
func (r *BenchResult) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| mechanism | metric | runs | p50 | p95 | max |\n|---|---|---|---|---|---|\n")
	mechs := r.mechanisms()
	for _, m := range mechs {
		runs := r.Failovers[m]
		for _, metric := range []struct {
			name string
			get  func(RunResult) float64
		}{
			{"detection (kill → decision)", func(x RunResult) float64 { return x.Detection }},
			{"EC2 converged (kill → EIP + all routes)", func(x RunResult) float64 { return x.Converged }},
			{"client outage", func(x RunResult) float64 { return x.Outage }},
		} {
			var xs []float64
			for _, x := range runs {
				xs = append(xs, metric.get(x))
			}
			st := summarize(xs)
			fmt.Fprintf(&b, "| %s | %s | %d | %.2f s | %.2f s | %.2f s |\n", m, metric.name, st.N, st.P50, st.P95, st.Max)
		}
		alive := 0
		for _, x := range runs {
			if x.TCPSurvived {
				alive++
			}
		}
		fmt.Fprintf(&b, "| %s | long TCP connection survived (client writes, server echoes) | %d | %d of %d | | |\n", m, len(runs), alive, len(runs))
		for _, k := range Streams {
			n, seen := 0, 0
			for _, x := range runs {
				if survived, ok := x.Streams[k]; ok {
					seen++
					if survived {
						n++
					}
				}
			}
			if seen > 0 {
				fmt.Fprintf(&b, "| %s | %s stream survived (server writes, client only reads) | %d | %d of %d | | |\n", m, k, seen, n, seen)
			}
		}
	}
	soaks := 0
	for _, m := range mechs {
		soaks += len(r.Soaks[m])
	}
	if soaks > 0 {
		fmt.Fprintf(&b, "\n| mechanism | loss between NATs | soak | false failovers (standby took over) | ownership changes in EC2 | longest client gap |\n|---|---|---|---|---|---|\n")
	}
	for _, m := range mechs {
		for _, s := range r.Soaks[m] {
			what := fmt.Sprintf("%d%%", s.LossPercent)
			if s.Kind == "stall" {
				what = fmt.Sprintf("none; owner's process stalled %d times, 0.2–%.1f s", s.Stalls, s.LongestStall)
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f s | %d | %d | %.2f s |\n", m, what, s.Seconds, s.FalseFailovers, s.OwnerChanges, s.ClientOutageMax)
		}
	}
	if a, k := r.Failovers[Natganker], r.Failovers[Keepalived]; len(a) > 0 && len(k) > 0 {
		var xa, xk []float64
		for _, x := range a {
			xa = append(xa, x.Outage)
		}
		for _, x := range k {
			xk = append(xk, x.Outage)
		}
		sa, sk := summarize(xa), summarize(xk)
		if sa.P50 > 0 {
			fmt.Fprintf(&b, "\nClient outage p50: keepalived / natganker = %.1f×\n", sk.P50/sa.P50)
		}
	}
	b.WriteString(r.handoffTable())
	return b.String()
}

func (r *BenchResult) mechanisms() []Mechanism {
	var ms []Mechanism
	for _, m := range []Mechanism{Natganker, Keepalived} {
		if len(r.Failovers[m]) > 0 || len(r.Soaks[m]) > 0 || len(r.Errors[m]) > 0 {
			ms = append(ms, m)
		}
	}
	return ms
}

// Write stores the results as bench-<time>.{md,json,svg} under dir.
func (r *BenchResult) Write(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create results dir: %w", err)
	}
	base := filepath.Join(dir, "bench-"+r.Stamp)
	var md strings.Builder
	fmt.Fprintf(&md, "# natganker failover benchmark, %s\n\n", r.Started.UTC().Format(time.RFC3339))
	md.WriteString(r.Table())
	md.WriteString("\n## Machine\n\n")
	for _, k := range sortedKeys(r.Machine) {
		fmt.Fprintf(&md, "- %s: %s\n", k, r.Machine[k])
	}
	md.WriteString("\n## Settings\n\n")
	for _, k := range sortedKeys(r.Settings) {
		fmt.Fprintf(&md, "- %s: %s\n", k, r.Settings[k])
	}
	for _, m := range r.mechanisms() {
		for _, e := range r.Errors[m] {
			fmt.Fprintf(&md, "\n**%s error:** %s\n", m, e)
		}
	}
	fmt.Fprintf(&md, "\n![client outage per run](%s)\n", filepath.Base(base)+".svg")
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", js, 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".svg", []byte(r.SVG()), 0o644)
}

// SVG plots the client outage of every run per mechanism, with the 1 s and 2 s targets.
func (r *BenchResult) SVG() string {
	const w, h, left, right, top, bottom = 760, 420, 60, 150, 40, 50
	maxY, maxX := 2.5, 1
	for _, runs := range r.Failovers {
		if len(runs) > maxX {
			maxX = len(runs)
		}
		for _, x := range runs {
			maxY = math.Max(maxY, x.Outage)
		}
	}
	maxY = math.Ceil(maxY)
	px := func(i int) float64 { return left + float64(i)*(w-left-right)/math.Max(1, float64(maxX-1)) }
	py := func(v float64) float64 { return top + (1-v/maxY)*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">Client outage per hard kill (UDP probes every 10 ms)</text>`+"\n", left)
	for v := 0.0; v <= maxY; v++ {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.0f s</text>`+"\n",
			left, w-right, py(v), py(v), left-6, py(v)+4, v)
	}
	for _, t := range []struct {
		v     float64
		label string
	}{{1, "target p50 ≤ 1 s"}, {2, "target max ≤ 2 s"}} {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="4 3"/><text x="%d" y="%.1f" fill="#c00">%s</text>`+"\n",
			left, w-right, py(t.v), py(t.v), w-right+6, py(t.v)+4, t.label)
	}
	colors := map[Mechanism]string{Natganker: "#1f77b4", Keepalived: "#ff7f0e"}
	for k, m := range r.mechanisms() {
		runs := r.Failovers[m]
		var pts []string
		for i, x := range runs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(i), py(x.Outage)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colors[m], strings.Join(pts, " "))
		for i, x := range runs {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>run %d: %.3f s</title></circle>`+"\n", px(i), py(x.Outage), colors[m], i+1, x.Outage)
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			w-right+6, top+40+k*20, colors[m], w-right+24, top+50+k*20, m)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">run</text>`+"\n", (w-right+left)/2, h-12)
	for i := 0; i < maxX; i++ {
		if maxX <= 20 || i%5 == 4 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", px(i), h-bottom+16, i+1)
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func machine() map[string]string {
	m := map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version()}
	m["kernel"] = firstLine(runQuiet("uname", "-r"))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				m["cpu"] = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		m["host"] = h
	}
	return m
}

func runQuiet(name string, args ...string) string {
	out, err := run(context.Background(), name, args...)
	if err != nil {
		return "unknown"
	}
	return out
}

func firstLine(s string) string {
	return strings.TrimSpace(strings.SplitN(strings.TrimSpace(s), "\n", 2)[0])
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
