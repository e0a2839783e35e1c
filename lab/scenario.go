package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
)

// Peer returns the other NAT.
func Peer(host string) string {
	if host == Nat1 {
		return Nat2
	}
	return Nat1
}

// StartMechanism starts mech on both NATs and waits until the pair is ready: for natganker,
// both agents see each other alive and healthy; for keepalived, nat1 is MASTER.
func (l *Lab) StartMechanism(ctx context.Context, mech Mechanism, timeout time.Duration) error {
	for _, h := range l.NATs() {
		if err := l.StartNode(ctx, h, mech); err != nil {
			return err
		}
	}
	return l.WaitReady(ctx, mech, timeout)
}

// WaitReady waits until every NAT runs mech and they agree: natganker agents see every NAT as a healthy
// alive member; keepalived has one MASTER.
func (l *Lab) WaitReady(ctx context.Context, mech Mechanism, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		if mech == Natganker {
			err = l.agentsReady(ctx)
		} else {
			err = l.keepalivedReady()
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s on both NATs: %w", mech, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *Lab) agentsReady(ctx context.Context) error {
	for _, h := range l.NATs() {
		ms, err := l.Members(ctx, h)
		if err != nil {
			return err
		}
		healthy := 0
		for _, m := range ms {
			if m.State == "alive" && m.Healthy {
				healthy++
			}
		}
		if healthy != len(l.NATs()) {
			return fmt.Errorf("%s sees %d healthy alive members: %+v", h, healthy, ms)
		}
	}
	return nil
}

// NATs are the lab's NAT hosts.
func (l *Lab) NATs() []string {
	if l.opts.Zones {
		return ZoneNATs
	}
	return []string{Nat1, Nat2}
}

func (l *Lab) keepalivedReady() error {
	last := map[string]string{}
	for _, t := range l.Transitions() {
		last[t.Host] = t.State
	}
	if last[Nat1] == "MASTER" && last[Nat2] == "BACKUP" {
		return nil
	}
	return fmt.Errorf("keepalived states: nat1 %q nat2 %q", last[Nat1], last[Nat2])
}

// Members asks the agent on host for its member list.
func (l *Lab) Members(ctx context.Context, host string) ([]agent.MemberView, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return control.NewClient(l.AgentSocket(host)).Members(ctx)
}

// Status asks the agent on host for its status.
func (l *Lab) Status(ctx context.Context, host string) (agent.StatusView, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return control.NewClient(l.AgentSocket(host)).Status(ctx)
}

// Failover is what one hard kill cost, as the lab measured it.
type Failover struct {
	Mechanism Mechanism
	Killed    string
	Survivor  string
	KilledAt  time.Time
	// DecidedAt is when the survivor decided to take over: the agent's claim start, or
	// keepalived entering MASTER. Zero when not seen.
	DecidedAt time.Time
	// ConvergedAt is when moto first showed the EIP and every route on the survivor.
	ConvergedAt time.Time
	// Outage is the client's gap between the last reply before the kill and the first
	// after it.
	Outage      Outage
	TCPSurvived bool
	// Streams says, per kind of server-side stream (Streams), whether it survived.
	Streams  map[string]bool
	Takeover *Takeover // natganker's log line, when seen
}

// Detection is kill → decision.
func (f Failover) Detection() time.Duration {
	if f.DecidedAt.IsZero() {
		return 0
	}
	return f.DecidedAt.Sub(f.KilledAt)
}

// Converged is kill → EIP and every route on the survivor in moto.
func (f Failover) Converged() time.Duration { return f.ConvergedAt.Sub(f.KilledAt) }

// HardKill kills host and measures the failover to its peer: it returns once moto shows
// the peer owning everything, client traffic flows again and the TCP connection had a
// chance to show whether it survived.
func (l *Lab) HardKill(ctx context.Context, tr *Traffic, host string, mech Mechanism, timeout time.Duration) (Failover, error) {
	f := Failover{Mechanism: mech, Killed: host, Survivor: Peer(host)}
	at, err := l.KillHost(ctx, host)
	if err != nil {
		return f, err
	}
	f.KilledAt = at
	if f.ConvergedAt, err = l.WaitOwner(ctx, f.Survivor, timeout); err != nil {
		return f, err
	}
	if err := tr.waitReply(ctx, at, timeout); err != nil {
		return f, fmt.Errorf("client traffic after killing %s: %w", host, err)
	}
	o, _ := tr.OutageAfter(at)
	f.Outage = o
	l.tl.Add(o.LastBefore, "client", "last reply before the kill")
	l.tl.Add(o.FirstAfter, "client", "first reply after the kill: outage %.3fs (%d probes lost)", o.Duration().Seconds(), o.Lost)
	// TCP retransmits back off; give each connection up to 5 s to show it lives, or broke.
	recovered := o.FirstAfter
	settled := func(now time.Time) bool {
		if !tr.TCPSurvived(at, recovered, now) && tr.TCPErrorsBetween(at, now) == 0 {
			return false
		}
		for _, k := range Streams {
			if !tr.StreamSurvived(k, at, recovered, now) && tr.StreamErrorsBetween(k, at, now) == 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(5 * time.Second)
	for !settled(time.Now()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	now := time.Now()
	f.TCPSurvived = tr.TCPSurvived(at, recovered, now)
	f.Streams = map[string]bool{}
	for _, k := range Streams {
		f.Streams[k] = tr.StreamSurvived(k, at, recovered, now)
	}
	survivorID := l.world.Instances[f.Survivor].ID
	// The decision is logged after the claim finishes; give the line a moment to arrive.
	deadline = time.Now().Add(3 * time.Second)
	for f.DecidedAt.IsZero() && time.Now().Before(deadline) {
		switch mech {
		case Natganker:
			for _, tk := range l.Takeovers() {
				if tk.Host == f.Survivor && tk.To == survivorID && !tk.Started.Before(at) {
					tk := tk
					f.Takeover, f.DecidedAt = &tk, tk.Started
					break
				}
			}
		case Keepalived:
			for _, t := range l.Transitions() {
				if t.Host == f.Survivor && t.State == "MASTER" && t.At.After(at) {
					f.DecidedAt = t.At
					break
				}
			}
		}
		if f.DecidedAt.IsZero() {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return f, nil
}
