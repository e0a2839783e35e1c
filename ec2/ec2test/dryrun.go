package ec2test

import (
	"net/http"
	"net/url"
	"strings"
)

// moto carries out ReplaceRoute and CreateRoute even with DryRun=true (it honours DryRun for
// AssociateAddress). The proxy answers those dry runs itself, as EC2 does: DryRunOperation,
// or UnauthorizedOperation for an action denied with Deny, and forwards nothing.
//
// A dry run is counted, and meets faults, under its own action name, DryRunPrefix and the
// action ("DryRun:ReplaceRoute"): a test that fails the next ReplaceRoute, or counts them,
// means the calls that move something.
var dryRunByProxy = map[string]bool{"ReplaceRoute": true, "CreateRoute": true}

// DryRunPrefix starts the action name a dry run is counted under.
const DryRunPrefix = "DryRun:"

// Deny makes the proxy answer UnauthorizedOperation to every call of each action, dry run or
// not, as EC2 does for an instance profile without that permission. Deny() with no action
// lifts every denial. ClearFaults leaves denials in place: they are configuration, not
// trouble.
func (p *Proxy) Deny(actions ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.denied = map[string]bool{}
	for _, a := range actions {
		p.denied[a] = true
	}
}

// answerItself answers the calls the proxy does not forward: denied actions, instance targets
// EC2 would refuse, and the dry runs moto would carry out. It reports whether it answered.
func (p *Proxy) answerItself(w http.ResponseWriter, r *http.Request, action string, body []byte) bool {
	base, dry := strings.CutPrefix(action, DryRunPrefix)
	p.mu.Lock()
	denied := p.denied[base]
	p.mu.Unlock()
	if denied {
		writeEC2Error(w, "UnauthorizedOperation")
		return true
	}
	if p.refuseInstanceTarget(w, r, base, body) {
		return true
	}
	if dry && dryRunByProxy[base] {
		writeEC2Error(w, "DryRunOperation")
		return true
	}
	return false
}

// isDryRun reports whether a Query API call asks for a dry run.
func isDryRun(r *http.Request, body []byte) bool {
	v, err := url.ParseQuery(string(body))
	if err != nil || v.Get("DryRun") == "" {
		v = r.URL.Query()
	}
	return strings.EqualFold(v.Get("DryRun"), "true")
}
