package ec2

import (
	"context"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

// sweepRuns is how often the sweep measures each table count, unless NATGANKER_SWEEP_RUNS
// says otherwise.
const sweepRuns = 3

// sweepLatency is added to every call, as EC2's round trip; NATGANKER_SWEEP_LATENCY (a
// duration) changes it, e.g. to 0 to see what moto and the client cost by themselves.
var sweepLatency = 100 * time.Millisecond

// variant is what one way of taking over measured for one table count, over all runs.
type variant struct {
	// took is from the decision (Claim called) to all routes verified (Report.Verified);
	// client to the clients' table moved (its RouteStep.Done).
	took, client []time.Duration
	// throttled counts the calls EC2 (the proxy) refused; surfaced the log lines at warn or
	// error level or about throttling; failed the runs whose claim returned an error.
	throttled, surfaced, failed int
}

func (v *variant) add(r claimResult) {
	v.took = append(v.took, r.took)
	v.client = append(v.client, r.client)
	v.throttled += r.throttled
	v.surfaced += r.surfaced
	if r.err != nil {
		v.failed++
	}
}

// sweepRow is what the sweep measured for one table count.
type sweepRow struct {
	N int
	// Paced is Claim as the agent makes it; PacedCheck the same while the agent's
	// permission check (dry runs, permissions.go) has been running for checkLead.
	Paced, PacedCheck variant
	// Unpaced and UnpacedCheck are the same with Claim as it was before the pacer: at most
	// 8 calls at once, throttled calls left to the SDK's retries.
	Unpaced, UnpacedCheck variant
	// Single is the one-call-at-a-time mover.
	Single variant
	// Bare is Claim with no latency, no throttling and no pacing: what moto and the client
	// cost by themselves on this machine.
	Bare variant
}

// checkLead is how long the permission check runs before the takeover in the *Check
// variants: at 10 calls a second, enough to empty EC2's burst if nothing holds it back.
const checkLead = 10 * time.Second

// floor is the least time from decision to all routes verified that EC2's bucket allows:
// one round trip for the calls while the Elastic IP and the routes fit in the burst, the
// tokens beyond it at the refill rate, and one round trip to read back.
func (r sweepRow) floor() time.Duration {
	return 2*sweepLatency + beyondBurst(r.N+1)
}

// issueFloor is the floor as issue 9 states it: one round trip within the burst, then
// (N - burst)/5 s; it counts neither the Elastic IP's token nor the read-back.
func (r sweepRow) issueFloor() time.Duration {
	return sweepLatency + beyondBurst(r.N)
}

func beyondBurst(calls int) time.Duration {
	return time.Duration(max(0, calls-mutateBurst)) * time.Second / mutateRate
}

func meanWorst(ds []time.Duration) (mean, worst time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
		worst = max(worst, d)
	}
	return sum / time.Duration(len(ds)), worst
}

// BenchmarkTableSweep measures a takeover of N = 1, 10, 50, 100 and 200 route tables
// (NATGANKER_SWEEP_TABLES=1,10 picks others) through a proxy that adds 100 ms to every call
// and throttles as EC2's token buckets do (mutating: burst 50, 5/s). Each run starts from a
// fresh proxy and a fresh client, both with full buckets, everything on instance A; B
// claims the Elastic IP and every route with its last read (Claim with known), from the
// decision to all routes verified. One table of the N, the last created, has a subnet
// associated: the clients'. Next to it, the same span for a one-call-at-a-time mover (the
// SDK's standard retries, 20 attempts, as a script calling the CLI would), and the floor.
//
// It runs each N NATGANKER_SWEEP_RUNS times (default 3) whatever b.N is, and prints mean and
// worst side by side. With NATGANKER_SWEEP_OUT=dir/base it also writes base.md (the table)
// and base.svg (the plot); a relative path is taken from ec2/, where go test runs. Run from
// the repository's root with
//
//	NATGANKER_SWEEP_OUT=$PWD/lab/results/sweep-$(date -u +%Y%m%dT%H%M%SZ) go test -run '^$' -bench TableSweep -benchtime 1x -timeout 60m ./ec2/
func BenchmarkTableSweep(b *testing.B) {
	sizes := []int{1, 10, 50, 100, 200}
	if s := os.Getenv("NATGANKER_SWEEP_TABLES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("NATGANKER_SWEEP_TABLES: bad table count %q", f)
			}
			sizes = append(sizes, n)
		}
	}
	if s := os.Getenv("NATGANKER_SWEEP_LATENCY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			b.Fatalf("NATGANKER_SWEEP_LATENCY: bad duration %q", s)
		}
		sweepLatency = d
	}
	runs := sweepRuns
	if s := os.Getenv("NATGANKER_SWEEP_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("NATGANKER_SWEEP_RUNS: bad count %q", s)
		}
		runs = n
	}
	started := time.Now().UTC()
	rows := map[int]*sweepRow{}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("tables=%d", n), func(b *testing.B) {
			// The testing package calls this once with b.N = 1 and may call it again:
			// measure once.
			if rows[n] == nil {
				rows[n] = sweep(b, n, runs)
			}
			mean, _ := meanWorst(rows[n].Paced.took)
			b.ReportMetric(mean.Seconds(), "s/claim")
			b.ReportMetric(mean.Seconds()/rows[n].floor().Seconds(), "floor-ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
	var done []sweepRow
	for _, n := range sizes {
		if r := rows[n]; r != nil {
			done = append(done, *r)
		}
	}
	if len(done) == 0 {
		return
	}
	table := sweepTable(done)
	fmt.Fprintf(os.Stdout, "\n%s\n", table)
	if base := os.Getenv("NATGANKER_SWEEP_OUT"); base != "" {
		if err := writeSweep(base, started, runs, done, table); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stdout, "wrote %s.md and %s.svg\n", base, base)
	}
}

// sweep measures n route tables runs times.
func sweep(b *testing.B, n, runs int) *sweepRow {
	b.Helper()
	spec := standardSpec()
	spec.RouteTables = nil
	for i := range n {
		rt := ec2test.RouteTableSpec{Name: fmt.Sprintf("rt%d", i), DefaultTo: 0, Tags: map[string]string{"natganker": "sweep"}}
		if i == n-1 {
			rt.SubnetCIDR = "10.0.1.0/24"
		}
		spec.RouteTables = append(spec.RouteTables, rt)
	}
	f := newFixture(b, spec, ec2test.ProxyOptions{}, Options{Logger: hclog.NewNullLogger()})
	ctx := context.Background()
	direct, err := New(ctx, Options{Region: f.world.Region, Endpoint: f.moto.Endpoint, Logger: hclog.NewNullLogger()})
	if err != nil {
		b.Fatal(err)
	}
	g := Group{Name: "sweep", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "sweep"}}
	a, bb := f.inst(0), f.inst(1)
	clients := f.world.RouteTableIDs[n-1]
	row := &sweepRow{N: n}
	for range runs {
		f.pointAllAt(b, a)
		known, err := direct.Observe(ctx, g, Self{InstanceID: bb})
		if err != nil {
			b.Fatal(err)
		}
		if len(known.Routes) != n {
			b.Fatalf("observed %d routes, want %d", len(known.Routes), n)
		}
		for _, v := range []struct {
			mode  int
			check bool
			into  *variant
		}{
			{claimPaced, false, &row.Paced},
			{claimPaced, true, &row.PacedCheck},
			{claimUnpaced, false, &row.Unpaced},
			{claimUnpaced, true, &row.UnpacedCheck},
			{claimBare, false, &row.Bare},
		} {
			f.pointAllAt(b, a)
			r := sweepClaim(b, f, g, known, bb, clients, v.mode, v.check)
			v.into.add(r)
			if r.err == nil {
				// An unpaced claim may fail, its throttled calls out of retries: counted.
				f.allAt(b, bb)
			}
		}

		f.pointAllAt(b, a)
		took, client := sweepSingle(b, f, known, bb, clients)
		row.Single.add(claimResult{took: took, client: client})
		f.allAt(b, bb)
	}
	return row
}

// sweepProxy starts a proxy in front of moto with EC2's latency and buckets, full; bare
// adds neither.
func sweepProxy(b *testing.B, f *fixture, bare bool) (*ec2test.Proxy, string) {
	b.Helper()
	po := ec2test.ProxyOptions{Throttle: true, Latency: sweepLatency}
	if bare {
		po = ec2test.ProxyOptions{}
	}
	p := ec2test.NewProxy(f.moto.Endpoint, po)
	ep, err := p.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p, ep
}

// How sweepClaim claims.
const (
	claimPaced   = iota // as the agent does
	claimUnpaced        // as before the pacer: 8 calls at once, throttling left to the SDK
	claimBare           // no latency, no throttling, no pacing
)

// claimResult is one takeover by Claim: the time to all routes verified and to the clients'
// table moved, how many calls EC2 refused, how many log lines told the operator of trouble,
// and the claim's error.
type claimResult struct {
	took, client        time.Duration
	throttled, surfaced int
	err                 error
}

// sweepClaim is one takeover by Claim through a fresh proxy and client; with check, the
// client has been checking its permissions for checkLead when the takeover starts.
func sweepClaim(b *testing.B, f *fixture, g Group, known Observation, self, clients string, mode int, check bool) claimResult {
	b.Helper()
	p, ep := sweepProxy(b, f, mode == claimBare)
	defer p.Close()
	var buf logBuffer
	ctx := context.Background()
	o := Options{Region: f.world.Region, Endpoint: ep,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "sweep", Level: hclog.Info, Output: &buf})}
	if mode == claimUnpaced {
		o.MaxConcurrency = 8
	}
	c, err := New(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	if mode != claimPaced {
		c.pace = newPacer(math.MaxFloat64, math.MaxFloat64, 0)
	}
	// A running agent has its instances cached: the claim describes none.
	if _, err := c.InstanceState(ctx, f.inst(0), self); err != nil {
		b.Fatal(err)
	}
	if check {
		checkCtx, stop := context.WithCancel(ctx)
		checked := make(chan struct{})
		go func() {
			defer close(checked)
			_, _ = c.CheckPermissions(checkCtx, g, Self{InstanceID: self}, known)
		}()
		defer func() { stop(); <-checked }()
		t := time.NewTimer(checkLead)
		select {
		case <-t.C:
		case <-checked:
			t.Stop()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	rep, err := c.Claim(cctx, g, Self{InstanceID: self}, &known)
	if err != nil && mode != claimUnpaced {
		b.Fatalf("claim of %d routes: %v", len(known.Routes), err)
	}
	res := claimResult{took: rep.Verified, throttled: p.Faults()[ec2test.FaultThrottle], err: err}
	for _, s := range rep.Routes {
		if s.RouteTableID == clients {
			res.client = s.Done
		}
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") || strings.Contains(line, "throttled") {
			res.surfaced++
		}
	}
	return res
}

// sweepSingle is one takeover by a mover making one call at a time, in the order of known's
// routes (by table id), with the SDK's standard retries, then reading back once.
func sweepSingle(b *testing.B, f *fixture, known Observation, self, clients string) (took, client time.Duration) {
	b.Helper()
	p, ep := sweepProxy(b, f, false)
	defer p.Close()
	api := ec2test.API(ep, f.world.Region)
	patient := func(o *ec2sdk.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 20
			so.RateLimiter = ratelimit.None
		})
	}
	ctx := context.Background()
	start := time.Now()
	if _, err := api.AssociateAddress(ctx, &ec2sdk.AssociateAddressInput{AllocationId: aws.String(f.world.AllocationID),
		InstanceId: aws.String(self), AllowReassociation: aws.Bool(true)}, patient); err != nil {
		b.Fatalf("one at a time: %v", err)
	}
	for _, r := range known.Routes {
		if _, err := api.ReplaceRoute(ctx, &ec2sdk.ReplaceRouteInput{RouteTableId: aws.String(r.RouteTableID),
			DestinationCidrBlock: aws.String(r.Destination), InstanceId: aws.String(self)}, patient); err != nil {
			b.Fatalf("one at a time: %v", err)
		}
		if r.RouteTableID == clients {
			client = time.Since(start)
		}
	}
	out, err := api.DescribeRouteTables(ctx, &ec2sdk.DescribeRouteTablesInput{
		Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{f.world.VPCID}}}}, patient)
	if err != nil {
		b.Fatalf("one at a time: read back: %v", err)
	}
	took = time.Since(start)
	moved := 0
	for _, t := range out.RouteTables {
		for _, rt := range t.Routes {
			if aws.ToString(rt.DestinationCidrBlock) == DefaultDestination && aws.ToString(rt.InstanceId) == self {
				moved++
			}
		}
	}
	if moved != len(known.Routes) {
		b.Fatalf("one at a time: %d of %d routes read back on %s", moved, len(known.Routes), self)
	}
	return took, client
}

// allAt fails unless the Elastic IP and every seeded route point at instance id.
func (f *fixture) allAt(b *testing.B, id string) {
	b.Helper()
	if eip, _ := f.rawEIP(b); eip != id {
		b.Fatalf("elastic ip on %q, want %s", eip, id)
	}
	for table, target := range f.rawRoutes(b, DefaultDestination, f.world.RouteTableIDs...) {
		if target != id {
			b.Fatalf("route in %s points at %q, want %s", table, target, id)
		}
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// sweepTable lays the rows out as a Markdown table.
func sweepTable(rows []sweepRow) string {
	var t strings.Builder
	t.WriteString("| route tables | floor (s) | Claim mean / worst (s) | ratio mean / worst | clients' table moved, worst (s) | " +
		"Claim during a permission check, mean / worst (s) | ratio, worst | " +
		"unpaced mean / worst (s) | unpaced during a check (s) | one at a time mean / worst (s) | its clients' table, worst (s) | " +
		"moto alone (s) | ratio to floor + moto alone, mean / worst | issue's floor (s) | throttled calls: paced / unpaced | trouble logged: paced / unpaced |\n")
	t.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	mw := func(v variant) string {
		m, w := meanWorst(v.took)
		out := secs(m) + " / " + secs(w)
		if v.failed > 0 {
			out += fmt.Sprintf(" (%d failed)", v.failed)
		}
		return out
	}
	for _, r := range rows {
		fl := r.floor()
		cm, cw := meanWorst(r.Paced.took)
		_, ccw := meanWorst(r.Paced.client)
		_, pcw := meanWorst(r.PacedCheck.took)
		_, scw := meanWorst(r.Single.client)
		bare, _ := meanWorst(r.Bare.took)
		rig := fl + bare
		fmt.Fprintf(&t, "| %d | %s | %s | %.2f / %.2f | %s | %s | %.2f | %s | %s | %s | %s | %s | %.2f / %.2f | %s | %d / %d | %d / %d |\n",
			r.N, secs(fl), mw(r.Paced), cm.Seconds()/fl.Seconds(), cw.Seconds()/fl.Seconds(), secs(ccw),
			mw(r.PacedCheck), pcw.Seconds()/fl.Seconds(),
			mw(r.Unpaced), mw(r.UnpacedCheck), mw(r.Single), secs(scw),
			secs(bare), cm.Seconds()/rig.Seconds(), cw.Seconds()/rig.Seconds(), secs(r.issueFloor()),
			r.Paced.throttled+r.PacedCheck.throttled, r.Unpaced.throttled+r.UnpacedCheck.throttled,
			r.Paced.surfaced+r.PacedCheck.surfaced, r.Unpaced.surfaced+r.UnpacedCheck.surfaced)
	}
	return t.String()
}

// writeSweep writes base.md and base.svg.
func writeSweep(base string, started time.Time, runs int, rows []sweepRow, table string) error {
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return fmt.Errorf("write sweep: %w", err)
	}
	host, _ := os.Hostname()
	var md strings.Builder
	fmt.Fprintf(&md, "# Takeover of N route tables at EC2's rate limit (%s)\n\n", started.Format(time.RFC3339))
	fmt.Fprintf(&md, "`NATGANKER_SWEEP_OUT=$PWD/lab/results/%s go test -run '^$' -bench TableSweep -benchtime 1x -timeout 60m ./ec2/`, %d runs per N, "+
		"on %s (%s/%s, %d CPUs), against moto behind the ec2test proxy: %v per call, EC2's token buckets "+
		"(mutating burst %d, refill %d/s). Each run: fresh proxy and client (full buckets), instance B claims "+
		"the Elastic IP and N routes from A with its last read (`Claim` with known), timed from the decision to "+
		"all routes verified (`Report.Verified`). One table, the last created, has a subnet (the clients').\n\n",
		filepath.Base(base), runs, host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), sweepLatency, mutateBurst, mutateRate)
	md.WriteString("Floor: one round trip for the calls while the Elastic IP and the N routes fit in the burst, " +
		"(N + 1 − 50)/5 s for the tokens beyond it, one round trip to read back. The issue's floor " +
		"(one round trip, then (N − 50)/5 s) leaves out the Elastic IP's token and the read-back. " +
		"One at a time: AssociateAddress, then ReplaceRoute per table by table id, then one DescribeRouteTables, " +
		"with the SDK's standard retries (20 attempts, exponential backoff with jitter). " +
		"Moto alone: the same Claim straight to moto, without latency, throttling or pacing. moto handles one " +
		"call at a time (about 10 ms each here), where EC2 serves a burst of calls at once, so on this rig the " +
		"calls of one round queue inside moto for up to N × 10 ms that no client can save; the ratio to the floor " +
		"plus moto alone counts that time as the rig's and shows what the agent adds.\n\n")
	md.WriteString(table)
	fmt.Fprintf(&md, "\n![sweep](%s.svg)\n", filepath.Base(base))
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("write sweep: %w", err)
	}
	if err := os.WriteFile(base+".svg", []byte(sweepSVG(rows, started)), 0o644); err != nil {
		return fmt.Errorf("write sweep: %w", err)
	}
	return nil
}

// sweepSVG plots the sweep: on the left seconds from decision to all routes verified against
// N (log scale), on the right the ratio to the floor.
func sweepSVG(rows []sweepRow, started time.Time) string {
	const (
		w, h          = 900, 410
		panelW        = 360
		top, bottom   = 65, 330
		leftA, leftB  = 70, 500
		xMinN, xMaxN  = 1.0, 200.0
		ratioTop      = 3.0
		colorClaim    = "#1f5fbf"
		colorSingle   = "#d9771e"
		colorFloor    = "#555555"
		colorClientsC = "#2a9d4a"
		colorCheck    = "#7b3fbf"
		colorUnpaced  = "#c0392b"
	)
	var yMax float64
	for _, r := range rows {
		for _, v := range []variant{r.Paced, r.PacedCheck, r.UnpacedCheck, r.Single} {
			_, w := meanWorst(v.took)
			yMax = max(yMax, w.Seconds())
		}
		yMax = max(yMax, r.floor().Seconds())
	}
	yMax = math.Ceil(yMax/5) * 5
	if yMax == 0 {
		yMax = 1
	}
	maxN := xMaxN
	for _, r := range rows {
		maxN = max(maxN, float64(r.N))
	}
	x := func(left float64, n int) float64 {
		return left + (math.Log10(float64(n))-math.Log10(xMinN))/(math.Log10(maxN)-math.Log10(xMinN))*panelW
	}
	ySec := func(s float64) float64 { return bottom - s/yMax*(bottom-top) }
	yRatio := func(q float64) float64 { return bottom - min(q, ratioTop)/ratioTop*(bottom-top) }

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&s, `<text x="%d" y="18" font-size="14">Takeover of N route tables: from the decision to all routes verified</text>`+"\n", leftA)
	fmt.Fprintf(&s, `<text x="%d" y="34">%s</text>`+"\n", leftA, html.EscapeString(fmt.Sprintf(
		"moto behind the ec2test proxy, %v per call, EC2's token buckets (mutating burst %d, %d/s); run %s",
		sweepLatency, mutateBurst, mutateRate, started.Format("2006-01-02 15:04Z"))))
	axes := func(left float64, label string, ticks []float64, tickText func(float64) string, y func(float64) float64) {
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", left, bottom, left+panelW, bottom)
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", left, top, left, bottom)
		for _, r := range rows {
			xx := x(left, r.N)
			fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xx, top, xx, bottom)
			fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", xx, bottom+15, r.N)
		}
		for _, t := range ticks {
			yy := y(t)
			fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, yy, left+panelW, yy)
			fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-5, yy+4, tickText(t))
		}
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">route tables (log scale)</text>`+"\n", left+panelW/2, bottom+32)
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", left+panelW/2, top-10, label)
	}
	var secTicks []float64
	for t := 0.0; t <= yMax; t += max(5, math.Ceil(yMax/30)*5) {
		secTicks = append(secTicks, t)
	}
	axes(leftA, "seconds", secTicks, func(t float64) string { return fmt.Sprintf("%g s", t) }, ySec)
	axes(leftB, "ratio to the floor (capped at 3)", []float64{0, 0.5, 1, 1.5, 2, 2.5, 3},
		func(t float64) string { return fmt.Sprintf("%g", t) }, yRatio)
	fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c00" stroke-dasharray="4,3"/>`+"\n",
		leftB, yRatio(1.2), leftB+panelW, yRatio(1.2))
	fmt.Fprintf(&s, `<text x="%d" y="%.1f" fill="#c00" text-anchor="end">target 1.2</text>`+"\n", leftB+panelW, yRatio(1.2)-4)

	line := func(pts [][2]float64, color, dash string) {
		var p []string
		for _, pt := range pts {
			p = append(p, fmt.Sprintf("%.1f,%.1f", pt[0], pt[1]))
		}
		fmt.Fprintf(&s, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s" points="%s"/>`+"\n", color, dash, strings.Join(p, " "))
		for _, pt := range pts {
			fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", pt[0], pt[1], color)
		}
	}
	type series struct {
		pick  func(sweepRow) []time.Duration
		color string
		dash  string
		label string
		ratio bool
	}
	all := []series{
		{func(r sweepRow) []time.Duration { return []time.Duration{r.floor()} }, colorFloor, "5,4", "floor: 2 round trips + (N+1−50)/5 s", false},
		{func(r sweepRow) []time.Duration { return r.Single.took }, colorSingle, "", "one call at a time, SDK retries", true},
		{func(r sweepRow) []time.Duration { return r.UnpacedCheck.took }, colorUnpaced, "", "unpaced (before), during a check", true},
		{func(r sweepRow) []time.Duration { return r.PacedCheck.took }, colorCheck, "6,2", "Claim during a permission check", true},
		{func(r sweepRow) []time.Duration { return r.Paced.took }, colorClaim, "", "Claim, paced (tick: worst run)", true},
		{func(r sweepRow) []time.Duration { return r.Paced.client }, colorClientsC, "2,2", "Claim: clients' table moved", false},
	}
	for _, se := range all {
		var pts, ratios [][2]float64
		for _, r := range rows {
			m, _ := meanWorst(se.pick(r))
			pts = append(pts, [2]float64{x(leftA, r.N), ySec(m.Seconds())})
			ratios = append(ratios, [2]float64{x(leftB, r.N), yRatio(m.Seconds() / r.floor().Seconds())})
		}
		line(pts, se.color, se.dash)
		if se.ratio {
			line(ratios, se.color, se.dash)
		}
	}
	for _, r := range rows {
		// The worst run of the paced claim, as a tick above its mean.
		cm, cw := meanWorst(r.Paced.took)
		fl := r.floor().Seconds()
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n",
			x(leftA, r.N)+4, ySec(cm.Seconds()), x(leftA, r.N)+4, ySec(cw.Seconds())-2, colorClaim)
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n",
			x(leftB, r.N)+4, yRatio(cm.Seconds()/fl), x(leftB, r.N)+4, yRatio(cw.Seconds()/fl)-2, colorClaim)
	}
	for i, se := range all {
		yy := float64(h - 30 + (i/3)*16)
		xx := float64(leftA + (i%3)*280)
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n", xx, yy-4, xx+20, yy-4, se.color, se.dash)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f">%s</text>`+"\n", xx+25, yy, html.EscapeString(se.label))
	}
	s.WriteString("</svg>\n")
	return s.String()
}
