package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/lab"
)

// demoCmd shows one hard kill, the takeover, the client's outage and the failback.
type demoCmd struct{}

// Usage describes the demo command.
func (c *demoCmd) Usage() string {
	return "Usage: natganker-lab demo [-agent BIN] [-dir D] [-failback-delay 10s]\n"
}

// Run runs the demo.
func (c *demoCmd) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	agentFlag := fs.String("agent", "", "natganker-agent binary (default: bin/natganker-agent, then $PATH)")
	dir := fs.String("dir", "", "working directory for configs and logs (default: a temporary one, removed)")
	failbackDelay := fs.Duration("failback-delay", 10*time.Second, "failback_delay written into the agents' config")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	agentBin := findAgent(*agentFlag)
	if agentBin == "" {
		return fmt.Errorf("natganker-agent is not built: run `make build` (or pass -agent PATH)")
	}
	out := os.Stdout
	start := time.Now()
	tl := lab.NewTimeline(nil, start)
	logger := hclog.New(&hclog.LoggerOptions{Name: "natganker-lab", Level: hclog.Warn, Output: os.Stderr})
	l := lab.New(lab.Options{Dir: *dir, AgentBin: agentBin, Timeline: tl, Logger: logger, FailbackDelay: *failbackDelay})
	defer l.Close()
	step := func(format string, a ...any) {
		tl.Flush(out)
		fmt.Fprintf(out, "\n== %s\n", fmt.Sprintf(format, a...))
	}
	fmt.Fprintf(out, "natganker failover demo (times relative to the start; agent %s)\n", agentBin)

	step("Building the lab: namespaces, moto as EC2, one metadata mock per NAT, VPC stand-in")
	if err := l.Up(ctx); err != nil {
		return err
	}
	step("Starting natganker-agent on nat1 (priority 200) and nat2 (priority 100)")
	if err := l.StartMechanism(ctx, lab.Natganker, 30*time.Second); err != nil {
		return err
	}
	if _, err := l.WaitOwner(ctx, lab.Nat1, 30*time.Second); err != nil {
		return err
	}
	step("Client traffic: UDP probe every 10 ms and one TCP connection to inet %s", lab.InetIP)
	tr, err := l.StartTraffic(ctx)
	if err != nil {
		return err
	}
	printMembers(ctx, out, l, lab.Nat2)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}

	step("Hard kill of nat1: its interfaces down, its agent SIGKILLed")
	f, err := l.HardKill(ctx, tr, lab.Nat1, lab.Natganker, 60*time.Second)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	tl.Flush(out)
	printMoto(ctx, out, l)

	step("Bringing nat1 back (links up, agent restarted); failback after %s", *failbackDelay)
	reviveAt := time.Now()
	if err := l.ReviveHost(ctx, lab.Nat1); err != nil {
		return err
	}
	backAt, err := l.WaitOwner(ctx, lab.Nat1, *failbackDelay+60*time.Second)
	if err != nil {
		return err
	}
	if err := tr.WaitReplyAfter(ctx, backAt, 10*time.Second); err != nil {
		return err
	}
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	fbGap := tr.LongestGap(reviveAt, time.Now())
	tl.Flush(out)
	printMembers(ctx, out, l, lab.Nat1)

	step("Tearing down")
	if err := l.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "   +%.3fs  lab     all namespaces and processes removed\n", time.Since(start).Seconds())

	word := func(ok bool) string {
		if ok {
			return "survived"
		}
		return "broke"
	}
	tcp := fmt.Sprintf("TCP echo %s, push stream %s, download %s", word(f.TCPSurvived), word(f.Streams["push"]), word(f.Streams["download"]))
	detect := "n/a"
	if d := f.Detection(); d > 0 {
		detect = fmt.Sprintf("%.2f s", d.Seconds())
	}
	fmt.Fprintf(out, "\nSUMMARY: hard kill of nat1 → client outage %.2f s (%d probes lost; takeover decided %s, EIP and routes moved in EC2 %.2f s after the kill; %s); failback to nat1 %.1f s after revival with a %.2f s gap; demo took %.0f s\n",
		f.Outage.Duration().Seconds(), f.Outage.Lost, detect, f.Converged().Seconds(), tcp,
		backAt.Sub(reviveAt).Seconds(), fbGap.Seconds(), time.Since(start).Seconds())
	return nil
}

func printMembers(ctx context.Context, out io.Writer, l *lab.Lab, host string) {
	ms, err := l.Members(ctx, host)
	if err != nil {
		fmt.Fprintf(out, "   (members from %s: %v)\n", host, err)
		return
	}
	fmt.Fprintf(out, "   members as %s sees them:\n", host)
	for _, m := range ms {
		owns := ""
		for _, g := range m.Groups {
			if g.Owns {
				owns += " owns " + g.Name
			}
		}
		health := "healthy"
		if !m.Healthy {
			health = "unhealthy: " + m.Reason
		}
		fmt.Fprintf(out, "     %-22s %-18s %-7s %s%s\n", m.Name, m.Address, m.State, health, owns)
	}
}

func printMoto(ctx context.Context, out io.Writer, l *lab.Lab) {
	s, err := l.Snapshot(ctx)
	if err != nil {
		fmt.Fprintf(out, "   (moto: %v)\n", err)
		return
	}
	w := l.World()
	fmt.Fprintf(out, "   moto now: EIP %s on %s;", w.AllocationID, w.HostOf(s.EIPHolder))
	for _, t := range w.Tables() {
		fmt.Fprintf(out, " %s 0.0.0.0/0 → %s;", t, w.HostOf(s.Routes[t]))
	}
	fmt.Fprintln(out)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
