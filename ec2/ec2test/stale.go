package ec2test

import (
	"net/http"
	"net/url"
	"slices"
	"time"
)

// staleAffects lists, for each mutating action StaleReads knows, the Describe* actions whose
// answers it changes.
var staleAffects = map[string][]string{
	"AssociateAddress":        {"DescribeAddresses"},
	"DisassociateAddress":     {"DescribeAddresses"},
	"CreateRoute":             {"DescribeRouteTables"},
	"ReplaceRoute":            {"DescribeRouteTables"},
	"DeleteRoute":             {"DescribeRouteTables"},
	"ModifyInstanceAttribute": {"DescribeInstanceAttribute", "DescribeInstances"},
}

// StaleReads makes Describe* answers lag behind mutations by d, as EC2's eventual consistency
// does ("Eventual consistency in the Amazon EC2 API"). d <= 0 turns it off.
//
// The rule: the proxy remembers, while StaleReads is on, the last successful answer moto gave
// to each Describe* request (same action and same parameters, in any order). When moto
// answers a mutating call with success — AssociateAddress or DisassociateAddress for
// DescribeAddresses; CreateRoute, ReplaceRoute or DeleteRoute for DescribeRouteTables;
// ModifyInstanceAttribute for DescribeInstances and DescribeInstanceAttribute — every such
// remembered request is answered, until d after that mutation, with the answer remembered
// before it, whatever it asks about. A mutation within the window extends it and keeps the
// older answer. Requests first made after the mutation get moto's answer, as do all others.
// The calls still reach moto and are counted as usual; Faults counts FaultStale.
func (p *Proxy) StaleReads(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.staleFor = max(d, 0)
	if d <= 0 {
		clear(p.answers)
	}
}

// staleEntry is what the proxy remembers of one Describe* request.
type staleEntry struct {
	action string
	last   answer  // the last successful answer from moto
	before *answer // served until until, when set
	until  time.Time
}

// staleAnswer applies StaleReads to the answer ans moto gave at now to a call of action: it
// remembers Describe* answers and opens the window after a mutation, and returns the answer
// to write back.
func (p *Proxy) staleAnswer(action string, r *http.Request, body []byte, ans answer, now time.Time) answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.staleFor <= 0 || ans.status/100 != 2 {
		return ans
	}
	if affects, ok := staleAffects[action]; ok {
		for _, e := range p.answers {
			if !slices.Contains(affects, e.action) {
				continue
			}
			if e.before == nil || !now.Before(e.until) {
				before := e.last
				e.before = &before
			}
			e.until = now.Add(p.staleFor)
		}
		return ans
	}
	if !IsDescribe(action) {
		return ans
	}
	key := requestKey(r, body)
	e := p.answers[key]
	if e == nil {
		e = &staleEntry{action: action}
		p.answers[key] = e
	}
	e.last = ans
	e.last.body = slices.Clone(ans.body) // ModifyResponse may edit what is written back
	if e.before != nil && now.Before(e.until) {
		p.faults[FaultStale]++
		stale := *e.before
		stale.body = slices.Clone(stale.body)
		return stale
	}
	e.before = nil
	return ans
}

// requestKey identifies a request by its parameters, in any order.
func requestKey(r *http.Request, body []byte) string {
	v, err := url.ParseQuery(string(body))
	if err != nil {
		v = url.Values{"": {string(body)}}
	}
	for k, vs := range r.URL.Query() {
		v[k] = append(v[k], vs...)
	}
	return r.URL.Path + "?" + v.Encode()
}
