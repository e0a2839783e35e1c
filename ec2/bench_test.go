package ec2

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

// BenchmarkClaim measures a takeover of 1, 5 and 20 route tables against moto behind a proxy
// adding 100ms to every call, the two instances taking turns. Run with
// `go test -run '^$' -bench Claim -benchtime 10x ./ec2/`.
func BenchmarkClaim(b *testing.B) {
	for _, latency := range []time.Duration{0, 100 * time.Millisecond} {
		for _, n := range []int{1, 5, 20} {
			b.Run(fmt.Sprintf("latency=%v/tables=%d", latency, n), func(b *testing.B) {
				spec := standardSpec()
				spec.RouteTables = nil
				for i := range n {
					spec.RouteTables = append(spec.RouteTables, ec2test.RouteTableSpec{Name: fmt.Sprintf("rt%d", i), DefaultTo: 0})
				}
				f := newFixture(b, spec, ec2test.ProxyOptions{Latency: latency}, Options{Logger: hclog.NewNullLogger()})
				g := Group{Name: "bench", ElasticIP: f.world.AllocationID, RouteTableIDs: f.world.RouteTableIDs}
				ctx := ctxT(b)
				var eip, routes, verified time.Duration
				b.ResetTimer()
				for i := range b.N {
					rep, err := f.client.Claim(ctx, g, Self{InstanceID: f.inst((i + 1) % 2)})
					if err != nil {
						b.Fatal(err)
					}
					if !rep.Changed() {
						b.Fatal("claim changed nothing")
					}
					eip += rep.EIPDone
					routes += rep.RoutesDone
					verified += rep.Verified
				}
				ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
				b.ReportMetric(ms(eip), "eip-ms")
				b.ReportMetric(ms(routes), "routes-ms")
				b.ReportMetric(ms(verified), "ms/claim")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
