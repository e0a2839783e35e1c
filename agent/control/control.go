// Package control serves an agent's Controller over HTTP and JSON on a unix socket, and
// provides the client the command line uses to talk to a running agent.
//
// The socket is created with mode 0600: whoever can connect can move the Elastic IP and the
// routes, so only the agent's own user (root) may. The server also asks the kernel who
// connected (SO_PEERCRED) and answers 403 to any user other than root and its own, so that
// a socket whose mode was loosened by mistake still keeps them out.
//
// The agent that owns the socket also holds a lock on a file beside it (agent.sock.lock), so
// that only one agent at a time can claim the socket, and a second one is refused before it
// joins the cluster.
package control

import (
	"errors"
	"time"

	"github.com/natganker/natganker/agent"
)

// DefaultSocket is where the agent listens and the command line connects unless told otherwise.
const DefaultSocket = "/run/natganker/agent.sock"

// Routes served under /v1.
const (
	pathMembers  = "/v1/members"
	pathStatus   = "/v1/status"
	pathYield    = "/v1/yield"
	pathResume   = "/v1/resume"
	pathTakeover = "/v1/takeover"
	pathKeyring  = "/v1/keyring"
)

// Per-request deadlines on the server. Takeover and yield wait for EC2 calls to be made and
// read back, so they get much longer than the requests that only read the agent's state.
const (
	readTimeout   = 10 * time.Second
	resumeTimeout = 5 * time.Second
	moveTimeout   = 30 * time.Second

	// clientSlack lets the server's own deadline error reach the client before the client
	// gives up on its side.
	clientSlack = 5 * time.Second
)

// maxBodyBytes bounds a request body; a list of group names is tiny.
const maxBodyBytes = 1 << 20

// Machine-readable reasons of error answers.
const (
	// codeUnknownGroup marks an error answer caused by agent.ErrUnknownGroup, so the client
	// can hand the same sentinel back to its caller.
	codeUnknownGroup = "unknown_group"
	// codeUserRefused marks a 403: the connecting user is neither root nor the agent's user.
	codeUserRefused = "user_refused"
	// codePeerUnknown marks a 403: the kernel could not tell who connected.
	codePeerUnknown = "peer_unknown"
)

// groupsRequest is the body of yield, resume and takeover. No groups means all groups.
type groupsRequest struct {
	Groups []string `json:"groups"`
}

// errorResponse is the body of every answer that is not 200.
type errorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
	// UID is the refused user, with codeUserRefused.
	UID *int `json:"uid,omitempty"`
}

// RemoteError is an error answered by the agent. It matches agent.ErrUnknownGroup with
// errors.Is when the agent rejected a group name.
type RemoteError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Message is the agent's error text.
	Message string
	// Code is a machine-readable reason, empty when the agent gave none.
	Code string
}

// Error returns the agent's error text.
func (e *RemoteError) Error() string { return e.Message }

// Is reports whether the remote error stands for target; only agent.ErrUnknownGroup is mapped.
func (e *RemoteError) Is(target error) bool {
	return target == agent.ErrUnknownGroup && e.Code == codeUnknownGroup
}

// UnreachableError means nothing answered on the control socket: the agent is not running,
// or runs with another socket path.
type UnreachableError struct {
	// Socket is the path that was tried.
	Socket string
	// Err is the dial error.
	Err error
}

// Error explains what to check.
func (e *UnreachableError) Error() string {
	return "cannot reach the agent at " + e.Socket + ": is natganker-agent running? (" + e.Err.Error() + ")"
}

// Unwrap returns the dial error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// isUnreachable reports whether err came from dialing the socket.
func isUnreachable(err error) (*UnreachableError, bool) {
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return ue, true
	}
	return nil, false
}
