package ec2test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

// post sends one Query API call through the proxy and returns the HTTP status and body.
func post(t *testing.T, endpoint, action string) (int, string) {
	t.Helper()
	resp, err := http.PostForm(endpoint+"/", url.Values{"Action": {action}, "Version": {"2016-11-15"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func startProxy(t *testing.T, o ProxyOptions) (*Proxy, string, *atomic.Int64) {
	t.Helper()
	var upstreamCalls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		_ = r.ParseForm()
		if strings.HasPrefix(r.Form.Get("Action"), "Bad") {
			w.WriteHeader(http.StatusBadRequest)
		}
		io.WriteString(w, "<"+r.Form.Get("Action")+"Response/>")
	}))
	t.Cleanup(up.Close)
	p := NewProxy(up.URL, o)
	ep, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p, ep, &upstreamCalls
}

func TestProxy(t *testing.T) {
	t.Run("ThrottlesLikeEC2", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{Throttle: true})
		throttled := 0
		for range 60 {
			if code, body := post(t, ep, "ReplaceRoute"); code == http.StatusServiceUnavailable {
				if !strings.Contains(body, "<Code>RequestLimitExceeded</Code>") {
					t.Fatalf("throttle body = %s", body)
				}
				throttled++
			}
		}
		// Burst 50, refill 5/s: 60 calls within well under a second lose about 10.
		if throttled < 8 || throttled > 10 {
			t.Errorf("throttled %d of 60 mutating calls, want about 10", throttled)
		}
		// Describe calls have their own bucket.
		if code, _ := post(t, ep, "DescribeRouteTables"); code != http.StatusOK {
			t.Errorf("describe after mutating burst: status %d", code)
		}
		if got := p.Stats()["ReplaceRoute"]; got != 60 {
			t.Errorf("stats = %v", p.Stats())
		}
	})

	t.Run("FailNext", func(t *testing.T) {
		p, ep, upstream := startProxy(t, ProxyOptions{})
		p.FailNext("CreateRoute", 2, "InternalError")
		for i, want := range []int{500, 500, 200} {
			if code, _ := post(t, ep, "CreateRoute"); code != want {
				t.Errorf("call %d: status %d, want %d", i, code, want)
			}
		}
		if code, _ := post(t, ep, "ReplaceRoute"); code != 200 {
			t.Errorf("other action failed: %d", code)
		}
		if upstream.Load() != 2 {
			t.Errorf("upstream saw %d calls, want 2", upstream.Load())
		}
		if s := p.Stats(); s["CreateRoute"] != 3 || Mutations(s) != 4 {
			t.Errorf("stats = %v", s)
		}
		p.ResetStats()
		if s := p.Stats(); len(s) != 0 {
			t.Errorf("stats after reset = %v", s)
		}
	})

	t.Run("ErrorParsedBySDK", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{})
		p.FailNext("DescribeAddresses", 1, "InvalidParameterValue")
		api := API(ep, "")
		_, err := api.DescribeAddresses(context.Background(), &ec2.DescribeAddressesInput{})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidParameterValue" {
			t.Errorf("err = %v, want api error InvalidParameterValue", err)
		}
	})

	t.Run("Hang", func(t *testing.T) {
		p, ep, upstream := startProxy(t, ProxyOptions{})
		p.Hang("DescribeInstances")
		if code, _ := post(t, ep, "DescribeAddresses"); code != http.StatusOK {
			t.Errorf("other action: status %d", code)
		}

		// A client that gives up ends the hung call.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ep+"/", strings.NewReader("Action=DescribeInstances"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("hung call answered with status %d", resp.StatusCode)
		}
		waitFor(t, func() bool { return p.Hanging() == 0 }, "the abandoned call to stop hanging")

		// Unhang lets a hung call through to upstream.
		done := make(chan int, 1)
		go func() {
			resp, err := http.PostForm(ep+"/", url.Values{"Action": {"DescribeInstances"}})
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		waitFor(t, func() bool { return p.Hanging() == 1 }, "the call to hang")
		before := upstream.Load()
		p.Unhang()
		if code := <-done; code != http.StatusOK {
			t.Errorf("released call: status %d", code)
		}
		if upstream.Load() != before+1 {
			t.Errorf("upstream saw %d calls after the release, want 1", upstream.Load()-before)
		}
		if s := p.Stats(); s["DescribeInstances"] != 2 {
			t.Errorf("stats = %v, want both hung calls counted", s)
		}
	})

	t.Run("Latency", func(t *testing.T) {
		_, ep, _ := startProxy(t, ProxyOptions{Latency: 50 * time.Millisecond})
		start := time.Now()
		post(t, ep, "DescribeInstances")
		if took := time.Since(start); took < 50*time.Millisecond {
			t.Errorf("call took %v, want at least 50ms", took)
		}
	})
}

func TestMoto(t *testing.T) {
	m := StartMoto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := Seed(ctx, m.Endpoint, WorldSpec{
		Instances:   []InstanceSpec{{Name: "a", PrivateIP: "10.0.0.10"}, {Name: "b"}},
		RouteTables: []RouteTableSpec{{Name: "r1", DefaultTo: 1}, {Name: "r2", DefaultTo: -1, SubnetCIDR: "10.0.5.0/24"}},
		EIPOwner:    1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Instances) != 2 || w.Instances[0].PrivateIP != "10.0.0.10" || w.Instances[0].ENIID == "" || len(w.RouteTableIDs) != 2 || w.AllocationID == "" {
		t.Fatalf("world = %+v", w)
	}
	api := API(m.Endpoint, w.Region)
	addr, err := api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{w.AllocationID}})
	if err != nil || aws.ToString(addr.Addresses[0].InstanceId) != w.Instances[1].ID {
		t.Errorf("eip: %v %+v", err, addr)
	}
	if err := m.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	vpcs, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{w.VPCID}})
	if err == nil && len(vpcs.Vpcs) != 0 {
		t.Errorf("vpc %s still there after reset", w.VPCID)
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
