package ec2test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ProxyOptions shape what a Proxy does to the calls it forwards.
type ProxyOptions struct {
	// Latency is added before every call is answered, as a network round trip would.
	Latency time.Duration
	// Throttle answers RequestLimitExceeded when EC2's per-account token buckets would:
	// mutating actions burst 50 and refill 5/s, Describe* actions burst 100 and refill 20/s.
	Throttle bool
}

// Proxy is an HTTP handler in front of a moto server that adds latency, throttling, injected
// errors and hung calls, and counts calls per EC2 action.
type Proxy struct {
	upstream string
	opts     ProxyOptions
	client   *http.Client

	mu       sync.Mutex
	stats    map[string]int
	fail     map[string][]string // action → codes to answer, in order
	mutate   *bucket
	describe *bucket
	modify   func(action string, body []byte) []byte
	hangAll  bool
	hang     map[string]bool // actions whose calls hang
	release  chan struct{}   // closed by Unhang: hung calls proceed
	hanging  int             // calls hung right now

	srv *http.Server
	ln  net.Listener
}

// NewProxy returns a proxy forwarding to upstream, e.g. a Moto's Endpoint.
func NewProxy(upstream string, o ProxyOptions) *Proxy {
	now := time.Now()
	return &Proxy{
		upstream: strings.TrimRight(upstream, "/"),
		opts:     o,
		client:   &http.Client{Timeout: 30 * time.Second},
		stats:    map[string]int{},
		fail:     map[string][]string{},
		hang:     map[string]bool{},
		mutate:   &bucket{burst: 50, rate: 5, tokens: 50, last: now},
		describe: &bucket{burst: 100, rate: 20, tokens: 100, last: now},
	}
}

// Start serves the proxy on a free loopback port and returns its endpoint.
func (p *Proxy) Start() (endpoint string, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for proxy: %w", err)
	}
	p.ln = ln
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// Close releases hung calls and stops the server started by Start.
func (p *Proxy) Close() error {
	p.Unhang()
	if p.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("close proxy: %w", err)
	}
	return nil
}

// FailNext makes the next n calls of action (e.g. "ReplaceRoute") fail with the EC2 error code,
// without reaching moto. RequestLimitExceeded and Unavailable answer HTTP 503, InternalError 500,
// anything else 400.
func (p *Proxy) FailNext(action string, n int, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range n {
		p.fail[action] = append(p.fail[action], code)
	}
}

// ModifyResponse installs fn to rewrite the body of every successful answer from moto, e.g.
// to make a route look like a blackhole. nil removes it.
func (p *Proxy) ModifyResponse(fn func(action string, body []byte) []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.modify = fn
}

// Hang makes every call of the given actions (of every action when none is given) hang, as an
// EC2 endpoint that accepts connections and never answers: the call is counted and then waits,
// unanswered, until the client gives up (the request's context ends) or Unhang is called.
func (p *Proxy) Hang(actions ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release == nil {
		p.release = make(chan struct{})
	}
	if len(actions) == 0 {
		p.hangAll = true
	}
	for _, a := range actions {
		p.hang[a] = true
	}
}

// Unhang stops hanging calls: the calls hanging now and later ones proceed as usual.
func (p *Proxy) Unhang() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release != nil {
		close(p.release)
		p.release = nil
	}
	p.hangAll = false
	clear(p.hang)
}

// Hanging returns how many calls are hanging right now.
func (p *Proxy) Hanging() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hanging
}

// Stats returns how many calls of each action the proxy received, failed ones included.
func (p *Proxy) Stats() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.stats))
	for k, v := range p.stats {
		out[k] = v
	}
	return out
}

// ResetStats sets every call count back to zero.
func (p *Proxy) ResetStats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.stats)
}

// Mutations counts the calls in stats of actions that are not Describe*.
func Mutations(stats map[string]int) int {
	n := 0
	for action, c := range stats {
		if !IsDescribe(action) {
			n += c
		}
	}
	return n
}

// IsDescribe reports whether action only reads (Describe*), which EC2 throttles separately.
func IsDescribe(action string) bool { return strings.HasPrefix(action, "Describe") }

// ServeHTTP forwards one EC2 Query API call.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	action := actionOf(r, body)
	p.mu.Lock()
	p.stats[action]++
	var release chan struct{}
	if p.hangAll || p.hang[action] {
		release = p.release
		p.hanging++
	}
	p.mu.Unlock()

	if release != nil {
		var gone bool
		select {
		case <-release:
		case <-r.Context().Done():
			gone = true
		}
		p.mu.Lock()
		p.hanging--
		p.mu.Unlock()
		if gone {
			return
		}
	}

	if p.opts.Latency > 0 {
		t := time.NewTimer(p.opts.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	p.mu.Lock()
	code := ""
	if q := p.fail[action]; len(q) > 0 {
		code, p.fail[action] = q[0], q[1:]
	} else if p.opts.Throttle && action != "" {
		b := p.mutate
		if IsDescribe(action) {
			b = p.describe
		}
		if !b.take(time.Now()) {
			code = "RequestLimitExceeded"
		}
	}
	modify := p.modify
	p.mu.Unlock()

	if code != "" {
		writeEC2Error(w, code)
		return
	}
	p.forward(w, r, body, action, modify)
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, body []byte, action string, modify func(string, []byte) []byte) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, "read upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	if modify != nil && resp.StatusCode/100 == 2 {
		out = modify(action, out)
	}
	for k, vs := range resp.Header {
		if strings.EqualFold(k, "Content-Length") {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

// actionOf finds the EC2 action in a Query API request (form body or URL query).
func actionOf(r *http.Request, body []byte) string {
	if v, err := url.ParseQuery(string(body)); err == nil && v.Get("Action") != "" {
		return v.Get("Action")
	}
	return r.URL.Query().Get("Action")
}

// writeEC2Error answers like EC2 does, with its XML error document.
func writeEC2Error(w http.ResponseWriter, code string) {
	status := http.StatusBadRequest
	switch code {
	case "RequestLimitExceeded", "Unavailable", "ServiceUnavailable":
		status = http.StatusServiceUnavailable
	case "InternalError", "InternalFailure":
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>injected by ec2test proxy: %s</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, code, code)
}

// bucket is a token bucket: burst tokens at most, refilled at rate per second.
type bucket struct {
	burst, rate, tokens float64
	last                time.Time
}

func (b *bucket) take(now time.Time) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
