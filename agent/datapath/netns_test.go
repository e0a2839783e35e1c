package datapath

import (
	"strings"
	"testing"
)

func managedConfig() Config {
	return Config{Manage: true, PublicInterface: labPublicIf, MasqueradeSource: labSource}
}

const wantRule = `oifname "pub0" ip saddr 198.18.0.0/16 masquerade`

// masqueradeRules counts the rules in table ip natganker as nft(8) sees them.
func (l *lab) masqueradeRules() int {
	l.t.Helper()
	return strings.Count(l.nft("list", "table", "ip", TableName), "masquerade")
}

func TestDatapath_EnsureFresh(t *testing.T) {
	l := newLab(t)
	h := startHelper(t, l.ns)
	h.newDatapath(managedConfig())

	if got, _ := h.check(); got.Healthy || got.Reason != "ip_forward is 0" {
		t.Fatalf("Check before Ensure = %+v, want unhealthy with ip_forward is 0", got)
	}
	h.must("ensure")

	for key, want := range map[string]string{
		"net/ipv4/ip_forward":                "1",
		"net/ipv4/conf/all/send_redirects":   "0",
		"net/ipv4/conf/pub0/send_redirects": "0",
	} {
		if got := l.sysctl(key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	listing := l.nft("list", "table", "ip", TableName)
	for _, want := range []string{
		"chain postrouting",
		"type nat hook postrouting priority srcnat; policy accept;",
		wantRule,
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("nft list table ip natganker lacks %q:\n%s", want, listing)
		}
	}
	if got, _ := h.check(); !got.Healthy {
		t.Fatalf("Check after Ensure = %+v, want healthy", got)
	}
}
