package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent"
)

// shutdownGrace bounds how long Close waits for cancelled handlers to return.
const shutdownGrace = 5 * time.Second

// Server serves a Controller on a unix socket.
type Server struct {
	ctrl   agent.Controller
	path   string
	logger hclog.Logger

	mu      sync.Mutex // guards the fields below across Start and Close
	started bool
	closed  bool
	srv     *http.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewServer returns a server for ctrl on socketPath. It starts nothing.
func NewServer(ctrl agent.Controller, socketPath string, logger hclog.Logger) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Server{ctrl: ctrl, path: socketPath, logger: logger.Named("control")}
}

// Start creates the socket's directory (0755) when missing, removes a stale socket left by an
// agent that died, listens with mode 0600, and serves until Close. It refuses to start when
// another process answers on the socket, so a second agent cannot steal the first one's socket.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("start control server: already started")
	}
	ln, err := listen(s.path)
	if err != nil {
		return err
	}
	base, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.started = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("control socket stopped serving", "socket", s.path, "error", err)
		}
	}()
	s.logger.Info("control socket listening", "socket", s.path)
	return nil
}

// Close stops serving, cancels requests still in flight, waits briefly for their handlers to
// return, and removes the socket. It is safe to call more than once, and before Start.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started {
		return nil
	}
	// Requests in flight are cancelled rather than awaited: the agent is going away, and an
	// operator's takeover must not race its handover.
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		// A handler ignored its cancelled context; cut its connection.
		_ = s.srv.Close()
	}
	s.wg.Wait()
	if rmErr := os.Remove(s.path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		return fmt.Errorf("remove control socket: %w", rmErr)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down control server: %w", err)
	}
	return nil
}

// listen prepares path and returns a listener on it with mode 0600.
//
// The socket is bound under a temporary name, restricted, then renamed into place: binding
// straight at path would leave it open to every local user for the moment between bind and
// chmod. Changing the umask instead would affect the whole process.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
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
	// The name is moved below; Close removes the final path itself.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("move control socket into place: %w", err)
	}
	return ln, nil
}

// removeStale removes a socket nobody answers on, and refuses when someone does or when the
// path holds something other than a socket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect control socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket %s exists and is not a socket (%s)", path, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another agent is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe control socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

// routes builds the HTTP handler.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathMembers, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
		defer cancel()
		members, err := s.ctrl.Members(ctx)
		s.reply(w, "members", nil, members, err)
	})
	mux.HandleFunc("GET "+pathStatus, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
		defer cancel()
		status, err := s.ctrl.Status(ctx)
		s.reply(w, "status", nil, status, err)
	})
	mux.HandleFunc("POST "+pathYield, s.action("yield", moveTimeout, s.ctrl.Yield))
	mux.HandleFunc("POST "+pathResume, s.action("resume", resumeTimeout, s.ctrl.Resume))
	mux.HandleFunc("POST "+pathTakeover, s.action("takeover", moveTimeout, s.ctrl.Takeover))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorResponse{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// action serves one of the operations that take a list of groups.
func (s *Server) action(op string, timeout time.Duration, call func(context.Context, []string) (agent.ActionResult, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req groupsRequest
		if err := decodeBody(w, r, &req); err != nil {
			s.logger.Warn("bad control request", "op", op, "error", err)
			writeJSON(w, http.StatusBadRequest, errorResponse{Error: op + ": " + err.Error()})
			return
		}
		// Operators' requests change who carries traffic, so they are logged at info level.
		s.logger.Info("control request", "op", op, "groups", req.Groups)
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		res, err := call(ctx, req.Groups)
		s.reply(w, op, req.Groups, res, err)
	}
}

// decodeBody reads a JSON request body; an empty body is an empty request.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("decode request body: %w", err)
	}
	if dec.More() {
		return errors.New("decode request body: trailing data")
	}
	return nil
}

// reply writes v, or err as an error answer.
func (s *Server) reply(w http.ResponseWriter, op string, groups []string, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	status, code := http.StatusInternalServerError, ""
	if errors.Is(err, agent.ErrUnknownGroup) {
		status, code = http.StatusBadRequest, codeUnknownGroup
	}
	s.logger.Warn("control request failed", "op", op, "groups", groups, "error", err)
	writeJSON(w, status, errorResponse{Error: err.Error(), Code: code})
}

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The client hung up if this fails; there is nobody left to tell.
	_ = json.NewEncoder(w).Encode(v)
}
