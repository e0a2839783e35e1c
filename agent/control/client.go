package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/natganker/natganker/agent"
)

// The client speaks to the same operations as the agent, so tools can hold either.
var (
	_ agent.Controller        = (*Client)(nil)
	_ agent.KeyringController = (*Client)(nil)
)

// Client talks to a running agent over its control socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socketPath. It connects per request.
func NewClient(socketPath string) *Client {
	c := &Client{socket: socketPath}
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, "unix", socketPath)
			if errors.Is(err, fs.ErrPermission) {
				// The socket's mode keeps this user out; the agent would refuse it too.
				return nil, &PermissionError{UID: os.Geteuid(), Err: err}
			}
			if err != nil {
				return nil, &UnreachableError{Socket: socketPath, Err: err}
			}
			return conn, nil
		},
		DisableKeepAlives: true,
	}}
	return c
}

// Socket returns the path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Members lists every peer the agent knows, itself included.
func (c *Client) Members(ctx context.Context) ([]agent.MemberView, error) {
	var out []agent.MemberView
	if err := c.do(ctx, http.MethodGet, pathMembers, nil, readTimeout, &out); err != nil {
		return nil, opError("members", err)
	}
	return out, nil
}

// Status reports, per group, who should own it and what EC2 says about it.
func (c *Client) Status(ctx context.Context) (agent.StatusView, error) {
	var out agent.StatusView
	if err := c.do(ctx, http.MethodGet, pathStatus, nil, readTimeout, &out); err != nil {
		return agent.StatusView{}, opError("status", err)
	}
	return out, nil
}

// Yield asks the agent to hand the named groups (all when empty) to the next peer.
func (c *Client) Yield(ctx context.Context, groups []string) (agent.ActionResult, error) {
	return c.action(ctx, "yield", pathYield, moveTimeout, groups)
}

// Resume asks the agent to clear a yield on the named groups (all when empty).
func (c *Client) Resume(ctx context.Context, groups []string) (agent.ActionResult, error) {
	return c.action(ctx, "resume", pathResume, resumeTimeout, groups)
}

// Takeover asks the agent to own the named groups (all when empty) now.
func (c *Client) Takeover(ctx context.Context, groups []string) (agent.ActionResult, error) {
	return c.action(ctx, "takeover", pathTakeover, moveTimeout, groups)
}

// Keyring lists the agent's gossip keys and, with an operation, changes them.
func (c *Client) Keyring(ctx context.Context, req agent.KeyringRequest) (agent.KeyringView, error) {
	var out agent.KeyringView
	if err := c.do(ctx, http.MethodPost, pathKeyring, req, readTimeout, &out); err != nil {
		return agent.KeyringView{}, opError("keyring "+req.Op, err)
	}
	return out, nil
}

func (c *Client) action(ctx context.Context, op, path string, timeout time.Duration, groups []string) (agent.ActionResult, error) {
	var out agent.ActionResult
	if err := c.do(ctx, http.MethodPost, path, groupsRequest{Groups: groups}, timeout, &out); err != nil {
		return agent.ActionResult{}, opError(op, err)
	}
	return out, nil
}

// opError prefixes err with the operation, except when the agent could not be reached at all
// or refused this user: those messages stand on their own and are the same for every
// operation.
func opError(op string, err error) error {
	if ue, ok := isUnreachable(err); ok {
		return ue
	}
	if pe, ok := isPermission(err); ok {
		return pe
	}
	return fmt.Errorf("%s: %w", op, err)
}

// do sends one request and decodes the answer into out. The client waits a little longer than
// the server's own deadline so that the server's explanation arrives rather than a bare timeout.
func (c *Client) do(ctx context.Context, method, path string, in any, serverTimeout time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(ctx, serverTimeout+clientSlack)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// The host is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://natganker"+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ue, ok := isUnreachable(err); ok {
			return ue
		}
		if pe, ok := isPermission(err); ok {
			return pe
		}
		return fmt.Errorf("talk to the agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return remoteError(resp, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// Bounds on what the client repeats of an error answer. An agent's error can list several
// EC2 failures; an answer that is not even JSON is shown only as a clue.
const (
	maxMessage = 8 << 10
	maxRawBody = 512
)

// remoteError turns an answer that is not 200 into the error the caller sees. The agent's
// words end up on an operator's terminal, so they are made printable and bounded.
func remoteError(resp *http.Response, data []byte) error {
	var e errorResponse
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		return &RemoteError{StatusCode: resp.StatusCode,
			Message: fmt.Sprintf("agent answered %s: %s", printable(resp.Status, maxRawBody), printable(strings.TrimSpace(string(data)), maxRawBody))}
	}
	if resp.StatusCode == http.StatusForbidden && e.Code == codeUserRefused {
		uid := os.Geteuid()
		if e.UID != nil {
			uid = *e.UID
		}
		return &PermissionError{UID: uid}
	}
	return &RemoteError{StatusCode: resp.StatusCode, Message: printable(e.Error, maxMessage), Code: printable(e.Code, maxRawBody)}
}

// printable returns s with every character a terminal would not simply print (control
// characters other than newline and tab, format characters such as bidirectional overrides,
// invalid UTF-8) written as a Go escape, and cut after limit bytes with a note of how much
// was left out.
func printable(s string, limit int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if b.Len() >= limit {
			fmt.Fprintf(&b, "… (%d more bytes)", len(s)-i)
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t' || unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}
