package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Option changes how a Server serves.
type Option func(*Server)

// AllowUIDs replaces the users allowed to talk to the server, by uid. By default they are
// root and the user the agent runs as: the socket's mode 0600 already keeps other users out,
// and checking who connects keeps them out too when that mode is loosened by mistake, or when
// a process that can bypass file permissions without being root connects.
func AllowUIDs(uids ...int) Option {
	return func(s *Server) { s.allowed = slices.Clone(uids) }
}

// defaultUIDs are the users allowed unless AllowUIDs says otherwise. SO_PEERCRED reports the
// effective uid of the connecting process, so the agent's effective uid is compared.
func defaultUIDs() []int {
	uids := []int{0}
	if euid := os.Geteuid(); euid != 0 {
		uids = append(uids, euid)
	}
	return uids
}

// peer is who is at the other end of one control connection, as the kernel tells.
type peer struct {
	cred *unix.Ucred // nil when the kernel could not tell
	err  error       // why cred is nil
}

// peerKey is the context key under which a connection's peer is stored.
type peerKey struct{}

// connContext records who connected, and logs a refusal once per connection: a refused user's
// requests are all answered 403 by the handler guard returns.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	p := peerOf(c)
	switch {
	case p.cred == nil:
		s.logger.Warn("control socket refused a connection: cannot tell who connected", "error", p.err)
	case !s.allows(p):
		s.logger.Warn("control socket refused a connection from a user that is neither root nor the agent's user",
			"uid", p.cred.Uid, "gid", p.cred.Gid, "pid", p.cred.Pid, "allowed_uids", s.allowed)
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// allows reports whether p may use the control socket.
func (s *Server) allows(p peer) bool {
	return p.cred != nil && slices.Contains(s.allowed, int(p.cred.Uid))
}

// guard answers 403 to every request from a peer that is not allowed, and passes the others
// to next.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := r.Context().Value(peerKey{}).(peer)
		if s.allows(p) {
			next.ServeHTTP(w, r)
			return
		}
		if p.cred == nil {
			writeJSON(w, http.StatusForbidden, errorResponse{Error: "the control socket could not tell who connected, so it refuses the request", Code: codePeerUnknown})
			return
		}
		uid := int(p.cred.Uid)
		writeJSON(w, http.StatusForbidden, errorResponse{Error: (&PermissionError{UID: uid}).Error(), Code: codeUserRefused, UID: &uid})
	})
}

// peerOf asks the kernel for the credentials of the process at the other end of c.
func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("not a unix socket connection (%T)", c)}
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return peer{err: fmt.Errorf("read peer credentials: %w", err)}
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{err: fmt.Errorf("read peer credentials: %w", err)}
	}
	if credErr != nil {
		return peer{err: fmt.Errorf("read peer credentials: %w", credErr)}
	}
	return peer{cred: cred}
}

// PermissionError means the control socket does not let this user in: either the socket's
// file permissions (mode 0600) refused the connection, or the agent refused the user it saw
// connect. Only root and the agent's own user may use the control socket.
type PermissionError struct {
	// UID is the user that was refused, as the agent saw it, or this process's effective uid
	// when the socket's permissions refused the connection.
	UID int
	// Err is the dial error when the socket's permissions refused; nil when the agent did.
	Err error
}

// Error tells the user what to do.
func (e *PermissionError) Error() string {
	return "the control socket refused this user (uid " + strconv.Itoa(e.UID) + "): run as root or as the agent's user"
}

// Unwrap returns the dial error, if any.
func (e *PermissionError) Unwrap() error { return e.Err }

// isPermission reports whether err is, or should become, a *PermissionError: the agent refused
// the user, or the socket's permissions did.
func isPermission(err error) (*PermissionError, bool) {
	var pe *PermissionError
	if errors.As(err, &pe) {
		return pe, true
	}
	return nil, false
}
