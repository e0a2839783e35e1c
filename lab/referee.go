package lab

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// refereeInterval is how often the referee samples the run.
const refereeInterval = 100 * time.Millisecond

// referee samples a chaos run: moto as the VPC stand-in last read it (directly, never
// through the EC2 proxy the faults sit in), the driver's record of what it did to each NAT
// (links, agent process, key, priority, partitions) and each NAT's nftables, read over
// netlink. Nothing it records comes from an agent. Judge turns the samples into a verdict.
type referee struct {
	c  *chaosRun
	ns map[string]*nsHandle

	mu      sync.Mutex
	samples []Sample
	broken  map[string]time.Time // last sample at which a NAT's datapath was broken
	owner   string
	ownerAt time.Time
	masq    map[string]bool // last masquerade state read
	nftErr  map[string]string
}

func newReferee(c *chaosRun) *referee {
	return &referee{c: c, ns: map[string]*nsHandle{}, broken: map[string]time.Time{},
		masq: map[string]bool{Nat1: true, Nat2: true}, nftErr: map[string]string{}}
}

// run samples until ctx ends. It takes one sample at once, so that the driver has a state to
// look at before it injects anything.
func (r *referee) run(ctx context.Context) {
	for _, h := range []string{Nat1, Nat2} {
		nh, err := openNS(h)
		if err != nil {
			r.c.problem("referee cannot read nftables on %s: %v", h, err)
			continue
		}
		r.ns[h] = nh
		defer nh.Close()
	}
	t := time.NewTicker(refereeInterval)
	defer t.Stop()
	for {
		r.take()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// take records one sample.
func (r *referee) take() {
	now := time.Now()
	snap := r.c.l.fol.Last()
	hosts, drop, exited := r.c.truth.snapshot()
	for _, h := range []string{Nat1, Nat2} {
		ht := hosts[h]
		if nh := r.ns[h]; nh != nil {
			ok, err := nh.masquerade()
			if err != nil {
				if r.nftErr[h] != err.Error() {
					r.nftErr[h] = err.Error()
					r.c.tl.Add(now, "referee", "cannot read nftables on %s (keeping the last state): %v", h, err)
				}
				ok = r.masq[h]
			}
			r.masq[h] = ok
		}
		ht.Masq = r.masq[h]
		hosts[h] = ht
	}
	w := r.c.l.World()
	s := Sample{At: now, EIP: w.HostOf(snap.EIPHolder), Hosts: hosts, DropIn: drop, Stale: now.Sub(snap.At) > time.Second}
	for _, t := range w.Tables() {
		s.Routes = append(s.Routes, w.HostOf(snap.Routes[t]))
	}
	r.mu.Lock()
	r.samples = append(r.samples, s)
	for h, ht := range s.Hosts {
		if ht.broken() {
			r.broken[h] = now
		}
	}
	if o := s.Owner(); o != r.owner && !s.Stale {
		r.owner, r.ownerAt = o, now
	}
	r.mu.Unlock()
	for h, p := range exited {
		r.c.agentExited(h, p, now)
	}
}

// last returns the latest sample (zero before the first).
func (r *referee) last() Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return Sample{}
	}
	return r.samples[len(r.samples)-1]
}

// since returns the samples taken after t.
func (r *referee) since(t time.Time) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := len(r.samples)
	for i > 0 && r.samples[i-1].At.After(t) {
		i--
	}
	return append([]Sample(nil), r.samples[i:]...)
}

// all returns every sample so far.
func (r *referee) all() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.samples...)
}

// lastBroken is the last time host's datapath was seen broken (zero: never).
func (r *referee) lastBroken(host string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broken[host]
}

// lastOwnerChange is when moto's converged owner (or the lack of one) last changed.
func (r *referee) lastOwnerChange() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ownerAt
}

// agentExited records an agent that exited without the driver stopping it, and starts it
// again so that the run goes on.
func (c *chaosRun) agentExited(host string, p *proc, at time.Time) {
	c.mu.Lock()
	c.violations = append(c.violations, Violation{Invariant: "exit", At: at, From: at.Add(-5 * time.Second), To: at.Add(time.Second),
		Detail: fmt.Sprintf("the agent on %s (pid %d) exited on its own: %v", host, p.cmd.Process.Pid, p.err)})
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.restartCrashed(host, p)
	}()
}
