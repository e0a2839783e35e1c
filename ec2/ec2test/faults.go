package ec2test

import (
	"strings"
	"time"
)

// In every method below that takes an action, "" stands for every action; a setting for the
// action itself is consulted before the one for "".

// SetLatency sets the delay added before every call is answered: fixed plus a uniformly random
// extra in [0, jitter). SetLatency(0, 0) removes it. Calls already waiting keep their delay.
func (p *Proxy) SetLatency(fixed, jitter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency, p.jitter = max(fixed, 0), max(jitter, 0)
}

// SetThrottle turns EC2-style throttling (see ProxyOptions.Throttle) on or off. Turning it on
// starts with full buckets.
func (p *Proxy) SetThrottle(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on && !p.throttle {
		now := time.Now()
		p.mutate.tokens, p.mutate.last = p.mutate.burst, now
		p.describe.tokens, p.describe.last = p.describe.burst, now
	}
	p.throttle = on
}

// FailNext makes the next n calls of action (e.g. "ReplaceRoute"; "" any action) fail with the
// EC2 error code, without reaching moto. RequestLimitExceeded and Unavailable answer HTTP 503,
// InternalError 500, anything else 400.
func (p *Proxy) FailNext(action string, n int, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range n {
		p.fail[action] = append(p.fail[action], code)
	}
}

// FailFor makes every call of action fail with the EC2 error code, without reaching moto, for
// d from now, e.g. FailFor("ReplaceRoute", 20*time.Second, "RequestLimitExceeded") throttles
// every route change for 20 s. d <= 0 removes the failure set for action.
func (p *Proxy) FailFor(action string, d time.Duration, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d <= 0 {
		delete(p.failFor, action)
		return
	}
	p.failFor[action] = timedFault{until: time.Now().Add(d), code: code}
}

// ErrorRate makes each call of action fail, without reaching moto, with probability fraction
// (0 to 1) and the EC2 error code; "" is InternalError (HTTP 500), Unavailable answers 503.
// A fraction <= 0 removes it.
func (p *Proxy) ErrorRate(action string, fraction float64, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fraction <= 0 {
		delete(p.errRate, action)
		return
	}
	if code == "" {
		code = "InternalError"
	}
	p.errRate[action] = rateFault{p: min(fraction, 1), code: code}
}

// ResetNext makes the next n calls of action end with a TCP reset and no answer, without
// reaching moto, as a connection cut by the network would.
func (p *Proxy) ResetNext(action string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetNext[action] += max(n, 0)
}

// ResetRate makes each call of action end with a TCP reset and no answer, without reaching
// moto, with probability fraction (0 to 1). A fraction <= 0 removes it.
func (p *Proxy) ResetRate(action string, fraction float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fraction <= 0 {
		delete(p.resetRate, action)
		return
	}
	p.resetRate[action] = min(fraction, 1)
}

// LoseAnswerNext lets the next n calls of action reach moto and then ends each with a TCP
// reset instead of its answer: the change is made, but the caller never learns it.
func (p *Proxy) LoseAnswerNext(action string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loseNext[action] += max(n, 0)
}

// StartOutage makes EC2 unreachable until EndOutage: every call ends at once with a TCP reset
// and no answer, without reaching moto; Faults counts each as FaultOutage. A call arriving
// during the outage is not counted in Stats; one already counted and waiting out the latency
// (or released from a hang) when the outage began is reset too. Calls hung by Hang stay hung.
func (p *Proxy) StartOutage() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outage, p.outageEnd = true, time.Time{}
}

// OutageFor is StartOutage for d from now: the outage ends by itself then, or earlier with
// EndOutage. d <= 0 ends any outage.
func (p *Proxy) OutageFor(d time.Duration) {
	if d <= 0 {
		p.EndOutage()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outage, p.outageEnd = true, time.Now().Add(d)
}

// EndOutage ends an outage at once.
func (p *Proxy) EndOutage() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outage = false
}

// InOutage reports whether an outage is on now.
func (p *Proxy) InOutage() bool { return p.outageNow(time.Now()) }

// OnCall installs fn to run each time moto answered a call of action with success (HTTP 2xx),
// with n the number of such calls of action so far, this one included (counted from the
// proxy's start, whether or not a hook was installed). fn runs synchronously, after moto made
// the change and before the answer is written back, so what fn does happens before the
// caller can learn of it: a test kills the caller when the k-th ReplaceRoute passes, or
// makes every later call fail with p.StartOutage (reset at once) or p.Hang (never answered).
// Those apply to later calls; the answer to this call is still written, unless
// LoseAnswerNext says otherwise. fn must not wait for the call that runs it. A hook for
// action runs before the one for "". nil removes the hook.
func (p *Proxy) OnCall(action string, fn func(n int)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fn == nil {
		delete(p.hooks, action)
		return
	}
	p.hooks[action] = fn
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

// ClearFaults ends every injected fault: the outage, hung calls (released), FailNext,
// FailFor, ErrorRate, ResetNext, ResetRate, LoseAnswerNext and StaleReads. Latency,
// throttling, ModifyResponse and OnCall hooks stay as they are.
func (p *Proxy) ClearFaults() {
	p.Unhang()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outage = false
	clear(p.fail)
	clear(p.failFor)
	clear(p.errRate)
	clear(p.resetNext)
	clear(p.resetRate)
	clear(p.loseNext)
	p.staleFor = 0
	clear(p.answers)
}

// timedFault is an error answered until a time.
type timedFault struct {
	until time.Time
	code  string
}

// rateFault is an error answered with probability p.
type rateFault struct {
	p    float64
	code string
}

// delayLocked draws the latency of one call.
func (p *Proxy) delayLocked() time.Duration {
	d := p.latency
	if p.jitter > 0 {
		d += time.Duration(p.rng.Int64N(int64(p.jitter)))
	}
	return d
}

// outageNow reports whether an outage is on at now.
func (p *Proxy) outageNow(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outageLocked(now)
}

func (p *Proxy) outageLocked(now time.Time) bool {
	if p.outage && !p.outageEnd.IsZero() && !now.Before(p.outageEnd) {
		p.outage = false
	}
	return p.outage
}

// refused reports whether an outage refuses a call now, and counts it if so.
func (p *Proxy) refused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.outageLocked(time.Now()) {
		return false
	}
	p.faults[FaultOutage]++
	return true
}

// takeReset decides whether a call of action is reset before it reaches moto.
func (p *Proxy) takeReset(action string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	reset := take(p.resetNext, action)
	if !reset {
		if f, ok := lookup(p.resetRate, action); ok && p.rng.Float64() < f {
			reset = true
		}
	}
	if reset {
		p.faults[FaultReset]++
	}
	return reset
}

// takeError returns the error code a call of action is answered with instead of reaching
// moto, or "".
func (p *Proxy) takeError(action string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	code := ""
	if q := p.fail[action]; len(q) > 0 {
		code, p.fail[action] = q[0], q[1:]
	} else if q := p.fail[""]; len(q) > 0 {
		code, p.fail[""] = q[0], q[1:]
	} else if f, ok := p.activeFailFor(action, now); ok {
		code = f.code
	} else if f, ok := lookup(p.errRate, action); ok && p.rng.Float64() < f.p {
		code = f.code
	}
	if code != "" {
		p.faults[FaultError]++
		return code
	}
	if p.throttle && isEC2Action(action) {
		b := p.mutate
		if IsDescribe(action) {
			b = p.describe
		}
		if !b.take(now) {
			p.faults[FaultThrottle]++
			return "RequestLimitExceeded"
		}
	}
	return ""
}

// activeFailFor returns the FailFor failure in force for action at now, forgetting expired ones.
func (p *Proxy) activeFailFor(action string, now time.Time) (timedFault, bool) {
	for _, a := range []string{action, ""} {
		f, ok := p.failFor[a]
		if !ok {
			continue
		}
		if now.Before(f.until) {
			return f, true
		}
		delete(p.failFor, a)
	}
	return timedFault{}, false
}

// runHooks counts a call of action moto answered with success and runs the hooks for it,
// outside the lock so that they may call the proxy.
func (p *Proxy) runHooks(action string) {
	p.mu.Lock()
	p.passed[action]++
	p.passed[""]++
	type run struct {
		fn func(int)
		n  int
	}
	var runs []run
	if fn := p.hooks[action]; fn != nil {
		runs = append(runs, run{fn, p.passed[action]})
	}
	if fn := p.hooks[""]; fn != nil && action != "" {
		runs = append(runs, run{fn, p.passed[""]})
	}
	p.mu.Unlock()
	for _, r := range runs {
		r.fn(r.n)
	}
}

// take uses up one of the counts for action (or for every action); it reports whether there
// was one.
func take(m map[string]int, action string) bool {
	for _, a := range []string{action, ""} {
		if m[a] > 0 {
			m[a]--
			return true
		}
	}
	return false
}

// lookup returns the setting for action, else the one for every action.
func lookup[V any](m map[string]V, action string) (V, bool) {
	if v, ok := m[action]; ok {
		return v, true
	}
	v, ok := m[""]
	return v, ok
}

// isEC2Action reports whether action names an EC2 Query API action rather than "METHOD /path".
func isEC2Action(action string) bool { return action != "" && !strings.ContainsAny(action, " /") }
