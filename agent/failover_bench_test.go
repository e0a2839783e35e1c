package agent

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// BenchmarkFailover hard-kills the owner of a two-agent cluster again and again and measures
// how long moto takes to show the Elastic IP and all three routes on the survivor, then lets
// the restarted agent fail back before the next kill. It reports the distribution, not a
// mean: p50 and max over the runs (at least 10).
//
//	go test -run '^$' -bench Failover -benchtime 1x ./agent
func BenchmarkFailover(b *testing.B) {
	const runs = 12
	c := newCluster(b, 200, 100)
	c.delay = time.Second
	c.start(0)
	c.start(1)
	c.waitMembers(c.agents[0], 2)
	c.waitOwner(0, 10*time.Second)
	var took []time.Duration
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := 0; i < runs; i++ {
			c.kill(0)
			took = append(took, c.waitOwner(1, 10*time.Second))
			c.start(0)
			c.waitMembers(c.agents[0], 2)
			c.waitOwner(0, 15*time.Second)
		}
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	p50 := took[len(took)/2]
	max := took[len(took)-1]
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(max.Milliseconds()), "max-ms")
	b.ReportMetric(float64(took[0].Milliseconds()), "min-ms")
	b.ReportMetric(0, "ns/op")
	var all string
	for _, d := range took {
		all += fmt.Sprintf(" %d", d.Milliseconds())
	}
	b.Logf("owner kill → EIP and 3 routes moved in moto, %d runs (ms, sorted):%s", len(took), all)
}
