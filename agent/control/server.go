package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/agent"
)

// shutdownGrace bounds how long Close waits for cancelled handlers to return.
const shutdownGrace = 5 * time.Second

// Server serves a Controller on a unix socket.
type Server struct {
	ctrl    agent.Controller
	path    string
	logger  hclog.Logger
	allowed []int // uids allowed to connect

	mu      sync.Mutex // guards the fields below across Start and Close
	started bool
	closed  bool
	ln      *Listener // given to NewServerOn, or claimed by Start
	ownLn   bool      // claimed by Start, so released by Close
	srv     *http.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewServer returns a server for ctrl on socketPath, which Start claims with Listen. It
// starts nothing. Only root and the user the agent runs as may use it unless an option says
// otherwise.
func NewServer(ctrl agent.Controller, socketPath string, logger hclog.Logger, opts ...Option) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{ctrl: ctrl, path: socketPath, logger: logger.Named("control"), allowed: defaultUIDs()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// NewServerOn returns a server for ctrl on a socket already claimed with Listen. It starts
// nothing. Close stops serving but leaves ln claimed: the caller releases it, which lets an
// agent keep other agents off its socket until it has left the cluster.
func NewServerOn(ctrl agent.Controller, ln *Listener, logger hclog.Logger, opts ...Option) *Server {
	s := NewServer(ctrl, ln.Path(), logger, opts...)
	s.ln = ln
	return s
}

// Start claims the socket with Listen unless the server was given one, and serves it until
// Close. A socket another agent holds is refused with an *InUseError, so a second agent
// cannot steal the first one's socket.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("start control server: already started")
	}
	if s.ln == nil {
		ln, err := Listen(s.path)
		if err != nil {
			return err
		}
		s.ln, s.ownLn = ln, true
	}
	base, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.srv = &http.Server{
		Handler:           s.guard(s.routes()),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnContext:       s.connContext,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.started = true
	ln := s.ln.ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("control socket stopped serving", "socket", s.path, "error", err)
		}
	}()
	s.logger.Info("control socket serving", "socket", s.path)
	return nil
}

// Close stops serving, cancels requests still in flight and waits briefly for their handlers
// to return. When Start claimed the socket, Close also removes it and releases its lock. It is
// safe to call more than once, and before Start.
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
	if s.ownLn {
		if lnErr := s.ln.Close(); lnErr != nil {
			return lnErr
		}
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down control server: %w", err)
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
	mux.HandleFunc("POST "+pathKeyring, s.keyring)
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

// keyring serves a keyring operation. Keys are secrets: the request is logged by the key's
// fingerprint only.
func (s *Server) keyring(w http.ResponseWriter, r *http.Request) {
	kc, ok := s.ctrl.(agent.KeyringController)
	if !ok {
		writeJSON(w, http.StatusNotFound, errorResponse{Error: "keyring: this agent has no keyring"})
		return
	}
	var req agent.KeyringRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.logger.Warn("bad control request", "op", "keyring", "error", err)
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "keyring: " + err.Error()})
		return
	}
	if req.Op != agent.KeyringList {
		key := req.Fingerprint
		if req.Key != nil {
			key = agent.KeyFingerprint(req.Key)
		}
		s.logger.Info("control request", "op", "keyring "+req.Op, "key", key)
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	view, err := kc.Keyring(ctx, req)
	s.reply(w, "keyring "+req.Op, nil, view, err)
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
