package ec2test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ProxyOptions shape what a Proxy does to the calls it forwards from the start. Latency, Jitter
// and Throttle can be changed while it runs (SetLatency, SetThrottle).
type ProxyOptions struct {
	// Latency is added before every call is answered, as a network round trip would.
	Latency time.Duration
	// Jitter adds to Latency a uniformly random extra in [0, Jitter) for each call.
	Jitter time.Duration
	// Throttle answers RequestLimitExceeded when EC2's per-account token buckets would:
	// mutating actions burst 50 and refill 5/s, Describe* actions burst 100 and refill 20/s.
	Throttle bool
	// AssociateAsEC2 makes AssociateAddress behave as EC2 does (see Proxy.AssociateAsEC2).
	AssociateAsEC2 bool
	// Seed makes the random draws (jitter, ErrorRate, ResetRate) repeatable; 0 picks a random
	// seed.
	Seed uint64
}

// Proxy is an HTTP handler in front of a moto server (or any HTTP server, such as the metadata
// mock) that adds latency, throttling, injected errors, connection resets, outages, hung calls
// and stale reads, counts calls per EC2 action, and calls hooks when calls pass. Every method
// is safe for concurrent use, also while calls are in flight and from inside an OnCall hook.
//
// A call goes through these steps in order: an outage resets its connection before it is
// counted; it is counted in Stats; it hangs (Hang); it waits the latency; an outage that began
// meanwhile resets it; ResetNext and ResetRate reset it; FailNext, FailFor, ErrorRate and
// throttling answer an error; a denied action (Deny) or a route dry run is answered as EC2
// would; AssociateAsEC2 applies EC2's rule for AssociateAddress; it is forwarded; hooks run (OnCall); a stale answer replaces a
// Describe* answer (StaleReads); LoseAnswerNext resets it; ModifyResponse rewrites the answer,
// which is written back.
type Proxy struct {
	upstream string
	client   *http.Client

	mu        sync.Mutex
	rng       *rand.Rand
	latency   time.Duration
	jitter    time.Duration
	throttle  bool
	mutate    *bucket
	describe  *bucket
	stats     map[string]int
	faults    map[string]int
	fail      map[string][]string // action → codes to answer, in order
	failFor   map[string]timedFault
	errRate   map[string]rateFault
	resetNext map[string]int
	resetRate map[string]float64
	loseNext  map[string]int
	outage    bool
	outageEnd time.Time // zero: until EndOutage
	hooks     map[string]func(n int)
	passed    map[string]int // successful upstream answers per action, and "" for all
	staleFor  time.Duration
	answers   map[string]*staleEntry // Describe* request key → its answers
	modify    func(action string, body []byte) []byte
	hangAll   bool
	hang      map[string]bool // actions whose calls hang
	release   chan struct{}   // closed by Unhang: hung calls proceed
	hanging   int             // calls hung right now
	denied    map[string]bool // actions answered UnauthorizedOperation (Deny)
	multiENI  map[string]bool // instances EC2 refuses as a target (RefuseInstanceTarget)
	asEC2     bool            // AssociateAddress as EC2 does it (AssociateAsEC2)
	displaced int             // Elastic IPs AssociateAsEC2 disassociated
	// assocMu makes the AssociateAddress calls of AssociateAsEC2 one at a time, so that two
	// cannot both find a private address free.
	assocMu sync.Mutex

	srv *http.Server
	ln  net.Listener
}

// Kinds of injected faults counted by Faults.
const (
	FaultOutage     = "outage"      // a connection reset during an outage
	FaultReset      = "reset"       // a connection reset by ResetNext or ResetRate
	FaultLostAnswer = "lost-answer" // an answer from moto dropped by LoseAnswerNext
	FaultError      = "error"       // an error answered by FailNext, FailFor or ErrorRate
	FaultThrottle   = "throttle"    // RequestLimitExceeded answered by the token buckets
	FaultStale      = "stale"       // a Describe* answer from before a mutation (StaleReads)
)

// NewProxy returns a proxy forwarding to upstream, e.g. a Moto's Endpoint.
func NewProxy(upstream string, o ProxyOptions) *Proxy {
	now := time.Now()
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Proxy{
		upstream:  strings.TrimRight(upstream, "/"),
		client:    &http.Client{Timeout: 30 * time.Second},
		rng:       rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		latency:   o.Latency,
		jitter:    o.Jitter,
		throttle:  o.Throttle,
		asEC2:     o.AssociateAsEC2,
		mutate:    &bucket{burst: 50, rate: 5, tokens: 50, last: now},
		describe:  &bucket{burst: 100, rate: 20, tokens: 100, last: now},
		stats:     map[string]int{},
		faults:    map[string]int{},
		fail:      map[string][]string{},
		failFor:   map[string]timedFault{},
		errRate:   map[string]rateFault{},
		resetNext: map[string]int{},
		resetRate: map[string]float64{},
		loseNext:  map[string]int{},
		hooks:     map[string]func(int){},
		passed:    map[string]int{},
		answers:   map[string]*staleEntry{},
		hang:      map[string]bool{},
	}
}

// Start serves the proxy on a free loopback port and returns its endpoint.
func (p *Proxy) Start() (endpoint string, err error) { return p.StartAt("127.0.0.1:0") }

// StartAt serves the proxy on addr (host:port; port 0 picks a free one) and returns its
// endpoint. Close stops it.
func (p *Proxy) StartAt(addr string) (endpoint string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen for proxy on %s: %w", addr, err)
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

// Stats returns how many calls of each action the proxy received, failed, reset and hung
// ones included, but not calls reset by an outage (see Faults). A call that is not an EC2
// Query API call (no Action) counts as "METHOD /path", e.g. "GET /latest/meta-data/mac".
func (p *Proxy) Stats() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.stats))
	for k, v := range p.stats {
		out[k] = v
	}
	return out
}

// Faults returns how many faults of each kind (FaultOutage, FaultReset, …) were injected.
func (p *Proxy) Faults() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.faults))
	for k, v := range p.faults {
		out[k] = v
	}
	return out
}

// ResetStats sets every call and fault count back to zero. The counts passed to OnCall hooks
// go on.
func (p *Proxy) ResetStats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.stats)
	clear(p.faults)
}

// Mutations counts the calls in stats that may change something: neither Describe* nor dry
// runs.
func Mutations(stats map[string]int) int {
	n := 0
	for action, c := range stats {
		if !IsDescribe(action) && !strings.HasPrefix(action, DryRunPrefix) {
			n += c
		}
	}
	return n
}

// IsDescribe reports whether action only reads (Describe*), which EC2 throttles separately.
func IsDescribe(action string) bool { return strings.HasPrefix(action, "Describe") }

// ServeHTTP forwards one EC2 Query API call, injecting the faults set on p.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.refused() {
		resetConn(w)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	action := actionOf(r, body)
	if isEC2Action(action) && isDryRun(r, body) {
		action = DryRunPrefix + action
	}
	p.mu.Lock()
	p.stats[action]++
	var release chan struct{}
	if p.hangAll || p.hang[action] {
		release = p.release
		p.hanging++
	}
	delay := p.delayLocked()
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

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	if p.refused() || p.takeReset(action) {
		resetConn(w)
		return
	}
	if code := p.takeError(action); code != "" {
		writeEC2Error(w, code)
		return
	}
	if p.answerItself(w, r, action, body) {
		return
	}
	var (
		asEC2  = p.associatesAsEC2()
		assoc  associateParams
		target slot
	)
	if asEC2 && action == "AssociateAddress" {
		p.assocMu.Lock()
		defer p.assocMu.Unlock()
		assoc = associateParamsOf(r, body)
		var code, msg string
		target, code, msg, err = p.beforeAssociate(r.Context(), r, assoc)
		if err != nil {
			http.Error(w, "associate as EC2: "+err.Error(), http.StatusBadGateway)
			return
		}
		if code != "" {
			writeEC2ErrorMessage(w, code, msg)
			return
		}
	}
	ans, err := p.fetch(r, body)
	if err != nil {
		http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	if target.eni != "" && ans.status/100 == 2 {
		if err := p.afterAssociate(r.Context(), r, assoc, target); err != nil {
			http.Error(w, "associate as EC2: "+err.Error(), http.StatusBadGateway)
			return
		}
	}
	now := time.Now()
	if ans.status/100 == 2 {
		p.runHooks(action)
	}
	ans = p.staleAnswer(action, r, body, ans, now)
	p.mu.Lock()
	lose := take(p.loseNext, action)
	if lose {
		p.faults[FaultLostAnswer]++
	}
	modify := p.modify
	p.mu.Unlock()
	if lose {
		resetConn(w)
		return
	}
	out := ans.body
	if asEC2 && action == "DescribeAddresses" && ans.status/100 == 2 {
		out = rewriteAddresses(out)
	}
	if modify != nil && ans.status/100 == 2 {
		out = modify(action, out)
	}
	for k, vs := range ans.header {
		if strings.EqualFold(k, "Content-Length") {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(ans.status)
	_, _ = w.Write(out)
}

// answer is what the upstream answered to one call.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// fetch forwards the call upstream and reads the whole answer.
func (p *Proxy) fetch(r *http.Request, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	resp, err := p.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("read upstream: %w", err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: out}, nil
}

// resetConn closes the call's connection with a TCP reset and no answer. Where the connection
// cannot be taken over (HTTP/2, a test recorder), it aborts the call instead.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close sends RST, not FIN
	}
	_ = conn.Close()
}

// actionOf finds the EC2 action in a Query API request (form body or URL query); for any other
// request it is "METHOD /path".
func actionOf(r *http.Request, body []byte) string {
	if v, err := url.ParseQuery(string(body)); err == nil && v.Get("Action") != "" {
		return v.Get("Action")
	}
	if a := r.URL.Query().Get("Action"); a != "" {
		return a
	}
	return r.Method + " " + r.URL.Path
}

// writeEC2Error answers like EC2 does, with its XML error document.
func writeEC2Error(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(errorStatus(code))
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>injected by ec2test proxy: %s</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, code, code)
}

// writeEC2ErrorMessage answers like EC2 does, with its XML error document and message.
func writeEC2ErrorMessage(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(errorStatus(code))
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, code, html.EscapeString(msg))
}

// errorStatus is the HTTP status EC2 answers with an error code.
func errorStatus(code string) int {
	switch code {
	case "RequestLimitExceeded", "Unavailable", "ServiceUnavailable":
		return http.StatusServiceUnavailable
	case "InternalError", "InternalFailure":
		return http.StatusInternalServerError
	case "UnauthorizedOperation":
		return http.StatusForbidden
	case "DryRunOperation":
		return http.StatusPreconditionFailed
	}
	return http.StatusBadRequest
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
