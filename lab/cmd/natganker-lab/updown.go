package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/natganker/natganker/lab"
)

// upCmd builds the lab and keeps it until interrupted.
type upCmd struct{}

// Usage describes the up command.
func (c *upCmd) Usage() string {
	return "Usage: natganker-lab up [-dir D] [-agent BIN] [-agents]\n"
}

// Run builds the lab, optionally starts agents, and waits for Ctrl-C.
func (c *upCmd) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "working directory for configs and logs (default: a temporary one)")
	agent := fs.String("agent", "", "natganker-agent binary (default: bin/natganker-agent or $PATH)")
	mech := fs.String("mech", "", "failover mechanism to start on both NATs: natganker or keepalived (default: none)")
	static := fs.Bool("static", false, "set up forwarding and masquerade on both NATs by hand")
	traffic := fs.Bool("traffic", false, "run client traffic")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	tl := lab.NewTimeline(os.Stdout, time.Now())
	l := lab.New(lab.Options{Dir: *dir, AgentBin: findAgent(*agent), Timeline: tl,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "natganker-lab", Level: hclog.Info, Output: os.Stderr})})
	defer l.Close()
	if err := l.Up(ctx); err != nil {
		return err
	}
	w := l.World()
	fmt.Printf("lab up in %s\n  moto: %s (aws --endpoint-url %s ec2 …)\n  nat1 %s  nat2 %s\n  client route table %s  EIP %s\n",
		l.Dir(), l.MotoEndpoint(), l.MotoEndpoint(), w.Instances[lab.Nat1].ID, w.Instances[lab.Nat2].ID, w.ClientTable, w.AllocationID)
	fmt.Printf("  shells: ip netns exec %s bash (also %s, %s, %s)\nCtrl-C to tear down.\n", lab.NS(lab.Client), lab.NS(lab.Nat1), lab.NS(lab.Nat2), lab.NS(lab.Inet))
	for _, h := range []string{lab.Nat1, lab.Nat2} {
		if *static {
			if err := lab.StaticDatapath(ctx, h); err != nil {
				return err
			}
		}
		if *mech != "" {
			if err := l.StartNode(ctx, h, lab.Mechanism(*mech)); err != nil {
				return err
			}
		}
	}
	if *traffic {
		if _, err := l.StartTraffic(ctx); err != nil {
			return err
		}
	}
	<-ctx.Done()
	fmt.Println("tearing down")
	return nil
}

// downCmd removes leftovers.
type downCmd struct{}

// Run removes every lab namespace, link and recorded process, unless a lab run is still
// going (then only with -force).
func (c *downCmd) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	force := fs.Bool("force", false, "remove the lab even while a lab run holds the lock")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if pid := lab.LockHolder(); pid != "" && !*force {
		return fmt.Errorf("a lab run (pid %s) is still going: stop it, or use down -force", pid)
	}
	return lab.RemoveAll(ctx)
}

// findAgent resolves the agent binary: the flag, then bin/natganker-agent, then $PATH.
func findAgent(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	for _, p := range []string{"bin/natganker-agent", "../bin/natganker-agent"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("natganker-agent"); err == nil {
		return p
	}
	return ""
}
