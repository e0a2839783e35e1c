package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// acquireLock takes the machine-wide lab lock: the lab's namespace names and the endpoint
// address are fixed, so two labs cannot run at once. It waits for a running lab to finish
// until ctx ends, and returns the lock file, which Close releases by closing it.
func acquireLock(ctx context.Context, logf func(string, ...any)) (*os.File, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", stateDir, err)
	}
	path := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lab lock: %w", err)
	}
	warned := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			_ = f.Truncate(0)
			_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
			return f, nil
		}
		if !warned {
			b, _ := os.ReadFile(path)
			logf("another lab run (pid %s) holds %s; waiting for it to finish", strings.TrimSpace(string(b)), path)
			warned = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another lab run to finish: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// LockHolder reports the process id recorded by a running lab, or "" when no lab holds
// the lock.
func LockHolder() string {
	path := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return ""
	}
	b, _ := os.ReadFile(path)
	if pid := strings.TrimSpace(string(b)); pid != "" {
		return pid
	}
	return "unknown"
}
