package ec2test

import (
	"strings"
	"testing"
)

func TestRewriteAddresses(t *testing.T) {
	item := func(alloc, eni, ip, tag string) string {
		tags := "<tagSet/>"
		if tag != "" {
			tags = "<tagSet><item><key>Name</key><value>x</value></item><item><key>" + addressTag + "</key><value>" + tag + "</value></item></tagSet>"
		}
		return "<item><allocationId>" + alloc + "</allocationId><networkInterfaceId>" + eni + "</networkInterfaceId><privateIpAddress>" + ip +
			"</privateIpAddress>" + tags + "</item>"
	}
	body := `<DescribeAddressesResponse><addressesSet>` +
		item("eipalloc-1", "eni-1", "10.0.0.10", "eni-1/10.0.0.100") + // recorded on the secondary address
		item("eipalloc-2", "eni-1", "10.0.0.10", "") + // never through the proxy: as moto says
		item("eipalloc-3", "eni-2", "10.0.0.11", "eni-1/10.0.0.100") + // moved elsewhere since: tag out of date
		`</addressesSet></DescribeAddressesResponse>`
	want := `<DescribeAddressesResponse><addressesSet>` +
		item("eipalloc-1", "eni-1", "10.0.0.100", "eni-1/10.0.0.100") +
		item("eipalloc-2", "eni-1", "10.0.0.10", "") +
		item("eipalloc-3", "eni-2", "10.0.0.11", "eni-1/10.0.0.100") +
		`</addressesSet></DescribeAddressesResponse>`
	if got := string(rewriteAddresses([]byte(body))); got != want {
		t.Errorf("got\n%s\nwant\n%s", strings.ReplaceAll(got, "<item><alloc", "\n<item><alloc"), strings.ReplaceAll(want, "<item><alloc", "\n<item><alloc"))
	}
}
