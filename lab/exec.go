package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// run executes a command to completion and returns its combined output. Errors carry the
// command line and what it printed, since ip and nft explain themselves on stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ip runs the ip command.
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, "ip", args...)
	return err
}

// nsIP runs the ip command inside namespace ns.
func nsIP(ctx context.Context, ns string, args ...string) error {
	return ip(ctx, append([]string{"-n", ns}, args...)...)
}

// nsRun runs a program inside namespace ns and returns its output.
func nsRun(ctx context.Context, ns string, name string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// nsCommand builds a long-running command inside namespace ns. ip netns exec execs the
// program in place, so the process id is the program's own. The child is killed when the
// lab dies, so a crashed run leaves no agent behind.
func nsCommand(ns string, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.Command(name, args...)
	} else {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// sysctl sets a kernel parameter inside namespace ns.
func sysctl(ctx context.Context, ns, key, value string) error {
	_, err := nsRun(ctx, ns, "sysctl", "-q", "-w", key+"="+value)
	return err
}
