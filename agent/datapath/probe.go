package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// prober runs the egress probe in the background, at most once per interval, and keeps the
// latest result so that Check never waits for the network more than once.
type prober struct {
	target  string // "host:port"; empty disables the probe
	iface   string
	timeout time.Duration
	every   time.Duration

	mu      sync.Mutex
	running chan struct{} // closed when the probe in flight finishes; nil when none runs
	done    bool          // a probe has finished; lastAt and lastErr are set
	lastAt  time.Time     // when the last finished probe started
	lastErr error
}

// kick starts a probe unless one is running or the last one is recent enough.
func (p *prober) kick() {
	if p.target == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running != nil || (p.done && time.Since(p.lastAt) < p.every) {
		return
	}
	running := make(chan struct{})
	p.running = running
	go func() {
		defer close(running)
		start := time.Now()
		err := p.dial()
		p.mu.Lock()
		p.running, p.done, p.lastAt, p.lastErr = nil, true, start, err
		p.mu.Unlock()
	}()
}

// result returns "" when the latest probe connected, and the reason otherwise. Before the
// first probe has finished it waits for it until ctx ends.
func (p *prober) result(ctx context.Context) string {
	if p.target == "" {
		return ""
	}
	p.mu.Lock()
	done, err, running := p.done, p.lastErr, p.running
	p.mu.Unlock()
	if !done && running != nil {
		select {
		case <-running:
			p.mu.Lock()
			done, err = p.done, p.lastErr
			p.mu.Unlock()
		case <-ctx.Done():
		}
	}
	switch {
	case !done:
		return fmt.Sprintf("egress probe %s: no result yet", p.target)
	case err != nil:
		return fmt.Sprintf("egress probe %s: %s", p.target, describeDialError(err, p.timeout))
	}
	return ""
}

// dial opens and closes one TCP connection to the target out of the public interface.
// SO_BINDTODEVICE makes the kernel route it through that interface whatever the routing
// table says, so the probe proves the public path, not just any path.
func (p *prober) dial() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	dialer := net.Dialer{
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.BindToDevice(int(fd), p.iface)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("bind to %s: %w", p.iface, serr)
			}
			return nil
		},
	}
	conn, err := dialer.DialContext(ctx, "tcp4", p.target)
	if err != nil {
		return err
	}
	return conn.Close()
}

// describeDialError turns a dial error into a few words, e.g. "connection refused".
func describeDialError(err error, timeout time.Duration) string {
	var errno syscall.Errno
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf("no answer within %s", timeout)
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &errno):
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op != "dial" {
			return opErr.Op + ": " + errno.Error()
		}
		if errors.Is(errno, unix.ENODEV) {
			return "bind to interface: " + errno.Error()
		}
		return errno.Error()
	}
	return err.Error()
}
