package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// A planned handoff in the lab: the owner's metadata mock starts serving a spot interruption
// notice (amazon-ec2-metadata-mock's spot mode), the owner's agent hands the group over while
// it still forwards, and the client's probes tell whether anything was lost. The benchmark
// runs it next to the hard kills.

// SpotMode is the metadata mock's mode for a spot interruption notice (action terminate, two
// minutes ahead) from the moment it starts.
var SpotMode = []string{"spot", "-a", "terminate"}

// StartIMDSMode starts host's metadata mock (again) in mode (nil: no notice) and waits until
// it listens.
func (l *Lab) StartIMDSMode(ctx context.Context, host string, mode []string) error {
	lw, err := l.appendLog("imds-" + host + ".log")
	if err != nil {
		return err
	}
	p, err := startIMDSMode(ctx, l.opts.Dir, l.world, l.world.Instances[host], lw, mode)
	if err != nil {
		return err
	}
	l.track(p)
	l.mu.Lock()
	l.imds[host] = p
	l.mu.Unlock()
	return nil
}

// Handoff is what one planned handoff cost the client.
type Handoff struct {
	Host, Survivor string
	// NoticeAt is when the mock began serving the notice; ConvergedAt when moto first showed
	// the EIP and every route on the survivor.
	NoticeAt, ConvergedAt time.Time
	// Window is the stretch of client traffic judged: from the notice to a second after the
	// convergence.
	WindowFrom, WindowTo time.Time
	// Sent and Lost count the client's probes sent in the window and those never answered.
	Sent, Lost int
	// LongestGap is the longest time between two replies in the window.
	LongestGap time.Duration
	// TCPSurvived and Streams say whether the echo and each server-side stream lived
	// through the window and carried data after the convergence.
	TCPSurvived bool
	Streams     map[string]bool
}

// SpotNotice serves host a spot interruption notice and measures the handoff to its peer: it
// returns once moto shows the peer owning everything and a second of client traffic after
// that has been answered or lost.
func (l *Lab) SpotNotice(ctx context.Context, tr *Traffic, host string, timeout time.Duration) (Handoff, error) {
	h := Handoff{Host: host, Survivor: Peer(host)}
	l.StopIMDS(host)
	h.WindowFrom = time.Now()
	if err := l.StartIMDSMode(ctx, host, SpotMode); err != nil {
		return h, fmt.Errorf("serve a spot notice to %s: %w", host, err)
	}
	h.NoticeAt = time.Now()
	l.tl.Add(h.NoticeAt, "lab", "SPOT NOTICE: the metadata mock of %s serves a spot interruption notice", host)
	var err error
	if h.ConvergedAt, err = l.WaitOwner(ctx, h.Survivor, timeout); err != nil {
		return h, err
	}
	h.WindowTo = h.ConvergedAt.Add(time.Second)
	select {
	case <-ctx.Done():
		return h, ctx.Err()
	case <-time.After(time.Until(h.WindowTo)):
	}
	// Every probe of the window has had its chance once a later one is answered.
	if err := tr.waitReply(ctx, h.WindowTo.Add(100*time.Millisecond), 10*time.Second); err != nil {
		return h, fmt.Errorf("client traffic after the handoff from %s: %w", host, err)
	}
	h.Sent, h.Lost = tr.LostBetween(h.WindowFrom, h.WindowTo)
	h.LongestGap = tr.LongestGap(h.WindowFrom, h.WindowTo)
	h.TCPSurvived = tr.TCPSurvived(h.WindowFrom, h.ConvergedAt, h.WindowTo)
	h.Streams = map[string]bool{}
	for _, k := range Streams {
		h.Streams[k] = tr.StreamSurvived(k, h.WindowFrom, h.ConvergedAt, h.WindowTo)
	}
	l.tl.Add(h.WindowTo, "client", "spot handoff from %s: %d of %d probes lost, longest gap %.3fs", host, h.Lost, h.Sent, h.LongestGap.Seconds())
	return h, nil
}

// EndNotice makes host an ordinary member again after a handoff on a notice: the agent,
// which stays up leaving for good, is stopped, its mock serves no notice any more, and the
// agent starts again.
func (l *Lab) EndNotice(ctx context.Context, host string) error {
	l.StopNode(host)
	l.StopIMDS(host)
	if err := l.StartIMDSMode(ctx, host, nil); err != nil {
		return err
	}
	l.mu.Lock()
	n := l.nodes[host]
	l.mu.Unlock()
	if n == nil {
		return fmt.Errorf("no failover process on %s", host)
	}
	return l.StartNode(ctx, host, n.mech)
}

// LostBetween counts the probes the client sent in [from, to] and those never answered. It
// needs an answered probe sent before from and one sent after to (sent is 0 otherwise).
func (tr *Traffic) LostBetween(from, to time.Time) (sent, lost int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var before, after uint64
	answered := map[uint64]bool{}
	for _, r := range tr.udp {
		switch {
		case r.sent.Before(from):
			before = max(before, r.seq)
		case r.sent.After(to):
			if after == 0 || r.seq < after {
				after = r.seq
			}
		default:
			answered[r.seq] = true
		}
	}
	if before == 0 || after <= before {
		return 0, 0
	}
	sent = int(after - before - 1)
	return sent, sent - len(answered)
}

// natgankerSettings describes the agents' configuration for the results.
func natgankerSettings(failback time.Duration) string {
	if failback > 0 {
		return fmt.Sprintf("defaults (gossip profile fast, failback auto) but failback_delay %s", failback)
	}
	return "defaults (gossip profile fast, failback auto 30s)"
}

// HandoffResult is one planned handoff in the benchmark's results.
type HandoffResult struct {
	Host        string  `json:"host"`
	NoticeToEC2 float64 `json:"notice_to_ec2_converged_s"`
	Sent        int     `json:"probes_sent"`
	Lost        int     `json:"probes_lost"`
	LongestGap  float64 `json:"longest_client_gap_s"`
	TCPSurvived bool    `json:"tcp_survived"`
	// Streams says, per kind of server-side stream, whether it survived.
	Streams map[string]bool `json:"streams_survived,omitempty"`
}

// benchSpot runs o.SpotRuns planned handoffs on the running pair: each time the owner gets a
// spot interruption notice, hands over, and is made an ordinary member again, and the pair
// settles (the owner back, after the failback delay) before the next.
func benchSpot(ctx context.Context, o BenchOptions, l *Lab, tr *Traffic, res *BenchResult) error {
	for i := 0; i < o.SpotRuns; i++ {
		if _, err := l.WaitOwner(ctx, Nat1, 120*time.Second); err != nil {
			return fmt.Errorf("spot run %d: %w", i+1, err)
		}
		owner, err := l.settle(ctx, Natganker, 90*time.Second)
		if err != nil {
			return fmt.Errorf("spot run %d: %w", i+1, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(time.Second)))):
		}
		h, err := l.SpotNotice(ctx, tr, owner, 90*time.Second)
		if err != nil {
			return fmt.Errorf("spot run %d: %w", i+1, err)
		}
		r := HandoffResult{Host: owner, NoticeToEC2: h.ConvergedAt.Sub(h.NoticeAt).Seconds(), Sent: h.Sent, Lost: h.Lost,
			LongestGap: h.LongestGap.Seconds(), TCPSurvived: h.TCPSurvived, Streams: h.Streams}
		if res.Handoffs == nil {
			res.Handoffs = map[Mechanism][]HandoffResult{}
		}
		res.Handoffs[Natganker] = append(res.Handoffs[Natganker], r)
		fmt.Fprintf(o.Progress, "%-10s spot %2d/%d: notice to %s  ec2 converged %.2fs after the notice  probes lost %d of %d  longest client gap %.3fs  survived: echo %v push %v download %v\n",
			Natganker, i+1, o.SpotRuns, owner, r.NoticeToEC2, r.Lost, r.Sent, r.LongestGap, r.TCPSurvived, r.Streams["push"], r.Streams["download"])
		if err := l.EndNotice(ctx, owner); err != nil {
			return fmt.Errorf("spot run %d: %w", i+1, err)
		}
	}
	return nil
}

// handoffTable renders the planned handoffs next to the hard kills of the same mechanism, as
// distributions of the probes the client lost and of its longest gap.
func (r *BenchResult) handoffTable() string {
	hs := r.Handoffs[Natganker]
	if len(hs) == 0 {
		return ""
	}
	kills := r.Failovers[Natganker]
	type row struct {
		what       string
		lost, gaps []float64
		zero       int
		survived   map[string]int // per connection kind: echo, then Streams
	}
	kinds := append([]string{"echo"}, Streams...)
	count := func(x *row, echo bool, streams map[string]bool) {
		if x.survived == nil {
			x.survived = map[string]int{}
		}
		if echo {
			x.survived["echo"]++
		}
		for _, k := range Streams {
			if streams[k] {
				x.survived[k]++
			}
		}
	}
	var rows []row
	if len(kills) > 0 {
		k := row{what: "hard kill of the owner"}
		for _, x := range kills {
			k.lost = append(k.lost, float64(x.Lost))
			k.gaps = append(k.gaps, x.Outage)
			if x.Lost == 0 {
				k.zero++
			}
			count(&k, x.TCPSurvived, x.Streams)
		}
		rows = append(rows, k)
	}
	s := row{what: "spot interruption notice to the owner"}
	for _, x := range hs {
		s.lost = append(s.lost, float64(x.Lost))
		s.gaps = append(s.gaps, x.LongestGap)
		if x.Lost == 0 {
			s.zero++
		}
		count(&s, x.TCPSurvived, x.Streams)
	}
	rows = append(rows, s)
	out := "\n| natganker | runs | probes lost p50 | p95 | max | runs with no probe lost | longest client gap p50 | p95 | max |"
	sep := "\n|---|---|---|---|---|---|---|---|---|"
	for _, k := range kinds {
		out += " " + k + " survived |"
		sep += "---|"
	}
	out += sep + "\n"
	for _, x := range rows {
		l, g := summarize(x.lost), summarize(x.gaps)
		out += fmt.Sprintf("| %s | %d | %.0f | %.0f | %.0f | %d of %d | %.3f s | %.3f s | %.3f s |",
			x.what, l.N, l.P50, l.P95, l.Max, x.zero, l.N, g.P50, g.P95, g.Max)
		for _, k := range kinds {
			out += fmt.Sprintf(" %d of %d |", x.survived[k], l.N)
		}
		out += "\n"
	}
	var ec2s []float64
	for _, x := range hs {
		ec2s = append(ec2s, x.NoticeToEC2)
	}
	e := summarize(ec2s)
	out += fmt.Sprintf("\nSpot notice served → EC2 shows the peer holding everything: p50 %.2f s, p95 %.2f s, max %.2f s (includes the agent's poll interval).\n", e.P50, e.P95, e.Max)
	out += "Probes are sent every 10 ms; a hard kill's gap is its outage, a handoff's the longest gap from the notice to a second after EC2 converged.\n"
	return out
}
