package ec2test

import (
	"fmt"
	"net/http"
	"net/url"
)

// targetActions are the calls that point something at an instance or an interface.
var targetActions = map[string]bool{"AssociateAddress": true, "ReplaceRoute": true, "CreateRoute": true}

// RefuseInstanceTarget makes the proxy answer as EC2 does for an instance with more than one
// network interface, which moto does not check: AssociateAddress, ReplaceRoute and CreateRoute
// naming one of ids by InstanceId are refused (InvalidInstanceID, "There are multiple
// interfaces attached to instance…"); naming an interface goes through.
func (p *Proxy) RefuseInstanceTarget(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.multiENI = map[string]bool{}
	for _, id := range ids {
		p.multiENI[id] = true
	}
}

// refuseInstanceTarget answers a call RefuseInstanceTarget makes EC2 refuse; it reports
// whether it answered.
func (p *Proxy) refuseInstanceTarget(w http.ResponseWriter, r *http.Request, action string, body []byte) bool {
	if !targetActions[action] {
		return false
	}
	v, err := url.ParseQuery(string(body))
	if err != nil || v.Get("InstanceId") == "" {
		v = r.URL.Query()
	}
	id := v.Get("InstanceId")
	p.mu.Lock()
	refused := p.multiENI[id]
	p.mu.Unlock()
	if !refused {
		return false
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidInstanceID</Code><Message>There are multiple interfaces attached to instance '%s'. Please specify an interface ID for the operation instead.</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, id)
	return true
}
