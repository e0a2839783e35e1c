package ec2

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

// BenchmarkTakeover compares the two ways a takeover can start, against moto behind a proxy
// adding 100ms to every call: acting on the last read at once (Claim with known: every route
// and the Elastic IP moved whatever known says) and reading first (Claim with nil: read, then
// move what does not point at self). Instance B takes over 1, 5 and 20 route tables (20 is
// more than MaxConcurrency) and the Elastic IP from A, in four cases of how the last read
// (known) differs from EC2:
//
//   - moved: it does not; everything points at A.
//   - repaired: known shows the first table pointing at B, but A pointed it back before dying.
//   - vanished: the first table's route was deleted since known was read.
//   - appeared: the first table was not in known (it was tagged since).
//
// The setup of each iteration (pointing everything at A, reading known) goes straight to moto
// and is not timed. With -v it prints, at the end, the mean and worst claim of each approach
// side by side. Run with
//
//	go test -run '^$' -bench Takeover -benchtime 10x -v ./ec2/
func BenchmarkTakeover(b *testing.B) {
	const latency = 100 * time.Millisecond
	cases := []string{"moved", "repaired", "vanished", "appeared"}
	modes := []string{"known", "read-first"}
	type timing struct{ mean, worst time.Duration }
	results := map[string]timing{} // "tables/case/mode"

	for _, n := range []int{1, 5, 20} {
		b.Run(fmt.Sprintf("tables=%d", n), func(b *testing.B) {
			spec := standardSpec()
			spec.RouteTables = nil
			for i := range n {
				spec.RouteTables = append(spec.RouteTables, ec2test.RouteTableSpec{
					Name: fmt.Sprintf("rt%d", i), DefaultTo: 0, Tags: map[string]string{"natganker": "bench"},
				})
			}
			f := newFixture(b, spec, ec2test.ProxyOptions{Latency: latency}, Options{Logger: hclog.NewNullLogger()})
			ctx := context.Background()
			direct, err := New(ctx, Options{Region: f.world.Region, Endpoint: f.moto.Endpoint})
			if err != nil {
				b.Fatal(err)
			}
			g := Group{Name: "bench", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "bench"}}
			a, bb := f.inst(0), f.inst(1)
			// A running agent has its instances cached: no claim below describes them.
			if _, err := f.client.InstanceState(ctx, a, bb); err != nil {
				b.Fatal(err)
			}
			first := f.world.RouteTableIDs[0]
			for _, cs := range cases {
				for _, mode := range modes {
					b.Run(cs+"/"+mode, func(b *testing.B) {
						var total, worst time.Duration
						for range b.N {
							b.StopTimer()
							f.pointAllAt(b, a)
							if cs == "repaired" {
								f.pointRoute(b, first, bb)
							}
							known, err := direct.Observe(ctx, g, Self{InstanceID: bb})
							if err != nil {
								b.Fatal(err)
							}
							switch cs {
							case "repaired":
								f.pointRoute(b, first, a)
							case "vanished":
								if _, err := f.raw.DeleteRoute(ctx, &ec2sdk.DeleteRouteInput{RouteTableId: aws.String(first), DestinationCidrBlock: aws.String(DefaultDestination)}); err != nil {
									b.Fatal(err)
								}
							case "appeared":
								known.Routes = slices.DeleteFunc(known.Routes, func(r Route) bool { return r.RouteTableID == first })
							}
							k := &known
							if mode == "read-first" {
								k = nil
							}
							cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							b.StartTimer()
							start := time.Now()
							rep, err := f.client.Claim(cctx, g, Self{InstanceID: bb}, k)
							took := time.Since(start)
							b.StopTimer()
							cancel()
							if err != nil {
								b.Fatalf("claim: %v", err)
							}
							if len(rep.Routes) != n {
								b.Fatalf("claim moved %d routes, want %d", len(rep.Routes), n)
							}
							total += took
							worst = max(worst, took)
						}
						mean := total / time.Duration(b.N)
						results[fmt.Sprintf("%d/%s/%s", n, cs, mode)] = timing{mean, worst}
						b.ReportMetric(float64(mean)/float64(time.Millisecond), "ms/claim")
						b.ReportMetric(float64(worst)/float64(time.Millisecond), "worst-ms")
						b.ReportMetric(0, "ns/op")
					})
				}
			}
		})
	}

	var out strings.Builder
	fmt.Fprintf(&out, "takeover by Claim, %v per call, MaxConcurrency %d: mean / worst ms\n", latency, DefaultMaxConcurrency)
	fmt.Fprintf(&out, "%-7s %-9s %-17s %-17s\n", "tables", "case", "known (act all)", "read first")
	ms := func(t timing) string {
		return fmt.Sprintf("%d / %d", t.mean.Milliseconds(), t.worst.Milliseconds())
	}
	for _, n := range []int{1, 5, 20} {
		worst := map[string]time.Duration{}
		for _, cs := range cases {
			if _, ok := results[fmt.Sprintf("%d/%s/%s", n, cs, modes[0])]; !ok {
				continue
			}
			fmt.Fprintf(&out, "%-7d %-9s", n, cs)
			for _, mode := range modes {
				t := results[fmt.Sprintf("%d/%s/%s", n, cs, mode)]
				worst[mode] = max(worst[mode], t.worst)
				fmt.Fprintf(&out, " %-17s", ms(t))
			}
			out.WriteString("\n")
		}
		if len(worst) > 0 {
			fmt.Fprintf(&out, "%-7d %-9s %-17d %d\n", n, "worst", worst["known"].Milliseconds(), worst["read-first"].Milliseconds())
		}
	}
	b.Log("\n" + out.String())
}

// pointAllAt points the Elastic IP and the default route of every seeded table at instance id,
// straight through moto.
func (f *fixture) pointAllAt(t testing.TB, id string) {
	t.Helper()
	if _, err := f.raw.AssociateAddress(context.Background(), &ec2sdk.AssociateAddressInput{
		AllocationId: aws.String(f.world.AllocationID), InstanceId: aws.String(id), AllowReassociation: aws.Bool(true),
	}); err != nil {
		t.Fatal(err)
	}
	for _, rtb := range f.world.RouteTableIDs {
		f.pointRoute(t, rtb, id)
	}
}

// pointRoute points the default route of table rtb at instance id, creating it when missing,
// straight through moto.
func (f *fixture) pointRoute(t testing.TB, rtb, id string) {
	t.Helper()
	ctx := context.Background()
	_, err := f.raw.ReplaceRoute(ctx, &ec2sdk.ReplaceRouteInput{
		RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(DefaultDestination), InstanceId: aws.String(id),
	})
	if routeMissing(err) {
		_, err = f.raw.CreateRoute(ctx, &ec2sdk.CreateRouteInput{
			RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(DefaultDestination), InstanceId: aws.String(id),
		})
	}
	if err != nil {
		t.Fatal(err)
	}
}
