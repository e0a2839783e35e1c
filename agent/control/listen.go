package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// identifyTimeout bounds how long Listen asks the process holding the socket who it is.
// It only delays a refusal, so it can be generous.
const identifyTimeout = 2 * time.Second

// Listener is a control socket claimed by this process: bound at its path with mode 0600 and
// held, so that no other agent can claim it, but not served yet. The agent claims its socket
// before it joins the cluster and serves it once the agent exists.
type Listener struct {
	path string
	ln   *net.UnixListener
	lock *os.File

	closeOnce sync.Once
	closeErr  error
}

// InUseError means another live process holds the control socket: in practice an agent
// that runs, starts or stops with the same control socket.
type InUseError struct {
	// Socket is the path of the control socket.
	Socket string
	// Listening is true when a process accepts connections on the socket; false when
	// another agent holds the socket's lock but does not listen (yet, or any more).
	Listening bool
	// PID is the process listening on the socket, 0 when unknown.
	PID int
	// Node is the instance id that agent reports, empty when it did not answer.
	Node string
}

// Error names the socket and what is known of the process holding it.
func (e *InUseError) Error() string {
	if !e.Listening {
		return "control socket " + e.Socket + " is held by another agent that is starting or stopping"
	}
	var who []string
	if e.PID > 0 {
		who = append(who, "pid "+strconv.Itoa(e.PID))
	}
	if e.Node != "" {
		who = append(who, "instance "+e.Node)
	}
	msg := "control socket " + e.Socket + " is served by a running agent"
	if len(who) > 0 {
		msg += " (" + strings.Join(who, ", ") + ")"
	}
	return msg
}

// Listen claims the control socket at path. It creates the socket's directory (0755) when
// missing, takes an exclusive lock on path+".lock" for as long as the Listener lives,
// removes a stale socket left by an agent that died, and listens with mode 0600. It returns
// an *InUseError when another process holds the lock or answers on the socket.
//
// The lock makes the check and the claim one step: two agents starting at once cannot both
// find the path free. The lock file stays behind on Close; removing it would let a process
// waiting on the old file and one creating a new file both believe they hold the lock.
func Listen(path string) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock control socket: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, inUse(path)
		}
		return nil, fmt.Errorf("lock control socket %s.lock: %w", path, err)
	}
	ln, err := claim(path)
	if err != nil {
		lock.Close() // releases the lock
		return nil, err
	}
	return &Listener{path: path, ln: ln, lock: lock}, nil
}

// Path returns where the socket is.
func (l *Listener) Path() string { return l.path }

// Close stops listening, removes the socket and releases the lock. It is safe to call more
// than once, and after an http.Server serving the listener closed it.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close control socket: %w", err))
		}
		// Removed while the lock is still held, so that the path is never taken from an
		// agent that claimed it in the meantime.
		if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove control socket: %w", err))
		}
		if err := l.lock.Close(); err != nil {
			errs = append(errs, fmt.Errorf("unlock control socket: %w", err))
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// claim removes a stale socket at path and listens there with mode 0600. The caller holds
// the lock.
//
// The socket is bound under a temporary name, restricted, then renamed into place: binding
// straight at path would leave it open to every local user for the moment between bind and
// chmod. Changing the umask instead would affect the whole process.
func claim(path string) (*net.UnixListener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	tmp := path + "." + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	// The name is moved below; Listener.Close removes the final path itself.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ul.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ul.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("move control socket into place: %w", err)
	}
	return ul, nil
}

// removeStale removes a socket nobody answers on, and refuses when someone does (an agent
// older than the lock file, or another program) or when the path holds something other than
// a socket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect control socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket %s exists and is not a socket (%s)", path, describe(fi.Mode()))
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return inUse(path)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("probe control socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

// describe names the kind of file m is.
func describe(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "file mode " + m.Type().String()
}

// inUse builds the refusal for a socket another process holds, with as much as that process
// tells about itself: the kernel gives the pid of whoever listens, the agent its name.
func inUse(path string) *InUseError {
	e := &InUseError{Socket: path}
	ctx, cancel := context.WithTimeout(context.Background(), identifyTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return e
	}
	e.Listening = true
	e.PID = peerPID(conn.(*net.UnixConn))
	conn.Close()
	members, err := NewClient(path).Members(ctx)
	if err != nil {
		return e
	}
	for _, m := range members {
		if m.Self {
			e.Node = m.Name
		}
	}
	return e
}

// peerPID returns the pid of the process that listens on the other end of conn, 0 when the
// kernel does not say.
func peerPID(conn *net.UnixConn) int {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int
	_ = rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
