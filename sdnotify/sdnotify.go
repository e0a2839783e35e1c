// Package sdnotify speaks systemd's service notification protocol (sd_notify(3)): each
// message is one datagram of newline-separated VAR=value assignments sent to the unix socket
// named by $NOTIFY_SOCKET. A service of Type=notify sends READY=1 once it is up; with
// WatchdogSec= set, systemd passes $WATCHDOG_USEC and expects WATCHDOG=1 more often than
// that, and restarts a service whose pings stop.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Messages the agent sends.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// Status is the STATUS= assignment of a free-form status line (systemctl status shows it).
func Status(s string) string {
	// One line: a newline would start another assignment.
	return "STATUS=" + strings.Join(strings.Fields(s), " ")
}

// ReloadingNow is RELOADING=1 with the MONOTONIC_USEC systemd asks of it (from version 253),
// so that it can tell this reload from an earlier one.
func ReloadingNow() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return Reloading
	}
	return fmt.Sprintf("%s\nMONOTONIC_USEC=%d", Reloading, ts.Nano()/1000)
}

// Notifier sends notifications to the service manager that started this process. Under no
// service manager (no $NOTIFY_SOCKET) it sends nothing and Notify returns nil.
type Notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration
}

// Env names the variables systemd passes.
const (
	EnvSocket        = "NOTIFY_SOCKET"
	EnvWatchdogUSec  = "WATCHDOG_USEC"
	EnvWatchdogPID   = "WATCHDOG_PID"
	envMaxWatchdog   = 24 * time.Hour
	envMinWatchdogUS = 1000
)

// FromEnv returns the Notifier systemd's variables describe and removes them from the
// environment, so that programs this process runs (hooks) do not talk to systemd in its
// name.
func FromEnv() (*Notifier, error) {
	n, err := New(os.Getenv, os.Getpid())
	for _, v := range []string{EnvSocket, EnvWatchdogUSec, EnvWatchdogPID} {
		_ = os.Unsetenv(v)
	}
	return n, err
}

// New returns the Notifier that the variables getenv returns describe, for the process pid.
// An unusable $WATCHDOG_USEC is an error; the Notifier then still notifies, without
// watchdog.
func New(getenv func(string) string, pid int) (*Notifier, error) {
	n := &Notifier{}
	sock := getenv(EnvSocket)
	if sock == "" {
		return n, nil
	}
	switch {
	case strings.HasPrefix(sock, "@"):
		// An abstract socket: its name starts with a NUL byte, which Go writes as "@".
	case strings.HasPrefix(sock, "/"):
	default:
		return n, fmt.Errorf("%s=%q: neither an absolute path nor an abstract socket", EnvSocket, sock)
	}
	n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
	us := getenv(EnvWatchdogUSec)
	if us == "" {
		return n, nil
	}
	if p := getenv(EnvWatchdogPID); p != "" && p != strconv.Itoa(pid) {
		// The watchdog is meant for another process of the service.
		return n, nil
	}
	v, err := strconv.ParseInt(us, 10, 64)
	if err != nil || v < envMinWatchdogUS || time.Duration(v)*time.Microsecond > envMaxWatchdog {
		return n, fmt.Errorf("%s=%q: not a watchdog timeout between 1ms and 24h in microseconds", EnvWatchdogUSec, us)
	}
	n.watchdog = time.Duration(v) * time.Microsecond
	return n, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// WatchdogTimeout is the service's watchdog timeout, 0 when systemd does not watch.
func (n *Notifier) WatchdogTimeout() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// WatchdogInterval is how often to send WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3)
// advises, so that one late ping is not yet a restart. 0 when systemd does not watch.
func (n *Notifier) WatchdogInterval() time.Duration { return n.WatchdogTimeout() / 2 }

// Notify sends state, one or more newline-separated assignments, as one datagram. It never
// blocks: a service manager that does not read its socket must not stall the caller (the
// agent's run loop), so a full socket buffer is an error instead.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify %s: %w", n.addr.Name, err)
	}
	defer unix.Close(fd)
	// x/sys/unix turns a leading "@" into the NUL byte of an abstract socket name.
	if err := unix.Sendto(fd, []byte(state), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, &unix.SockaddrUnix{Name: n.addr.Name}); err != nil {
		return fmt.Errorf("notify %s: %w", n.addr.Name, err)
	}
	return nil
}
