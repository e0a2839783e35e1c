package lab

import (
	"fmt"
	"time"
)

// EC2Fault is one kind of EC2 trouble the chaos run injects between the NATs and moto, through
// ec2test's proxy. The VPC stand-in and the referee read moto directly and never see it.
type EC2Fault struct {
	// Latency and Jitter are added to every call: Latency plus a random extra below Jitter.
	Latency, Jitter time.Duration
	// Fraction of the calls answered at once with Code instead of reaching moto (0..1):
	// InternalError or Unavailable (5xx), RequestLimitExceeded (throttling).
	Fraction float64
	Code     string
	// Outage: EC2 unreachable, every call reset at once. Hang: every call accepted and never
	// answered, so that the agent's attempts run into their call timeout.
	Outage, Hang bool
	// Stale makes Describe* answers lag this long behind each change (eventual consistency).
	Stale time.Duration
}

func (f EC2Fault) String() string {
	switch {
	case f.Outage:
		return "outage (every call reset at once)"
	case f.Hang:
		return "outage (every call hangs unanswered)"
	case f.Fraction > 0:
		return fmt.Sprintf("%.0f%% of calls answered %s", 100*f.Fraction, f.Code)
	case f.Stale > 0:
		return fmt.Sprintf("reads lag %s behind changes", f.Stale)
	case f.Latency > 0 || f.Jitter > 0:
		return fmt.Sprintf("+%s–%s per call", f.Latency, f.Latency+f.Jitter)
	}
	return "none"
}

// SetEC2Fault injects f between the NATs and moto, replacing the previous fault; the zero
// EC2Fault clears it (calls hung by it proceed). It needs a lab started with a Proxy.
func (l *Lab) SetEC2Fault(f EC2Fault) error {
	p := l.proxy
	if p == nil {
		return fmt.Errorf("set EC2 fault: the lab runs without the EC2 proxy")
	}
	p.ClearFaults()
	base := l.opts.Proxy
	p.SetLatency(base.Latency+f.Latency, base.Jitter+f.Jitter)
	if f.Fraction > 0 {
		p.ErrorRate("", f.Fraction, f.Code)
	}
	if f.Outage {
		p.StartOutage()
	}
	if f.Hang {
		p.Hang()
	}
	if f.Stale > 0 {
		p.StaleReads(f.Stale)
	}
	return nil
}
