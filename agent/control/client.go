package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/natganker/natganker/agent"
)

// The client speaks to the same operations as the agent, so tools can hold either.
var _ agent.Controller = (*Client)(nil)

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

func (c *Client) action(ctx context.Context, op, path string, timeout time.Duration, groups []string) (agent.ActionResult, error) {
	var out agent.ActionResult
	if err := c.do(ctx, http.MethodPost, path, groupsRequest{Groups: groups}, timeout, &out); err != nil {
		return agent.ActionResult{}, opError(op, err)
	}
	return out, nil
}

// opError prefixes err with the operation, except when the agent could not be reached at all:
// that message stands on its own and is the same for every operation.
func opError(op string, err error) error {
	if ue, ok := isUnreachable(err); ok {
		return ue
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
		return fmt.Errorf("talk to the agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("agent answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
		}
		return &RemoteError{StatusCode: resp.StatusCode, Message: e.Error, Code: e.Code}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
