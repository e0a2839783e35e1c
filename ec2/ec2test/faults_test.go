package ec2test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// call sends one Query API call with the given parameters through client and returns the
// HTTP status and body, or the error of a call that got no answer.
func call(client *http.Client, endpoint, action string, params ...string) (int, string, error) {
	v := url.Values{"Action": {action}, "Version": {"2016-11-15"}}
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	resp, err := client.PostForm(endpoint+"/", v)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// isReset reports whether err is a connection reset, as opposed to a timeout or an answer.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// newClient returns an HTTP client of its own (its own keep-alive connections) that gives up
// after 10 s, far longer than a reset takes.
func newClient(t *testing.T) *http.Client {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// wantReset fails the test unless a call of action ends in a connection reset.
func wantReset(t *testing.T, client *http.Client, ep, action string) {
	t.Helper()
	code, body, err := call(client, ep, action)
	if err == nil {
		t.Fatalf("%s answered %d %q, want a connection reset", action, code, body)
	}
	if !isReset(err) {
		t.Fatalf("%s: %v, want a connection reset", action, err)
	}
}

// wantStatus fails the test unless a call of action is answered with status.
func wantStatus(t *testing.T, client *http.Client, ep, action string, status int) string {
	t.Helper()
	code, body, err := call(client, ep, action)
	if err != nil {
		t.Fatalf("%s: %v, want status %d", action, err, status)
	}
	if code != status {
		t.Fatalf("%s: status %d (%s), want %d", action, code, body, status)
	}
	return body
}

func TestProxy_Latency(t *testing.T) {
	t.Run("JitterWithinBounds", func(t *testing.T) {
		p := NewProxy("http://127.0.0.1:1", ProxyOptions{Latency: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Seed: 1})
		lo, hi := time.Hour, time.Duration(0)
		for range 1000 {
			d := p.delayLocked()
			if d < 20*time.Millisecond || d >= 30*time.Millisecond {
				t.Fatalf("delay %v outside [20ms, 30ms)", d)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo > 21*time.Millisecond || hi < 29*time.Millisecond {
			t.Errorf("delays spread over [%v, %v], want nearly all of [20ms, 30ms)", lo, hi)
		}
		p.SetLatency(5*time.Millisecond, 0)
		if d := p.delayLocked(); d != 5*time.Millisecond {
			t.Errorf("delay without jitter = %v, want 5ms", d)
		}
		p.SetLatency(0, 0)
		if d := p.delayLocked(); d != 0 {
			t.Errorf("delay after clearing = %v", d)
		}
	})

	t.Run("AppliedToCalls", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{})
		p.SetLatency(40*time.Millisecond, 20*time.Millisecond)
		start := time.Now()
		wantStatus(t, newClient(t), ep, "DescribeInstances", http.StatusOK)
		if took := time.Since(start); took < 40*time.Millisecond {
			t.Errorf("call took %v, want at least the fixed 40ms", took)
		}
	})
}

func TestProxy_ErrorRate(t *testing.T) {
	p, ep, upstream := startProxy(t, ProxyOptions{Seed: 7})
	client := newClient(t)
	p.ErrorRate("ReplaceRoute", 0.3, "Unavailable")
	failed := 0
	for range 300 {
		code, body, err := call(client, ep, "ReplaceRoute")
		switch {
		case err != nil:
			t.Fatal(err)
		case code == http.StatusServiceUnavailable && strings.Contains(body, "<Code>Unavailable</Code>"):
			failed++
		case code != http.StatusOK:
			t.Fatalf("status %d %s", code, body)
		}
	}
	// Binomial(300, 0.3): mean 90, standard deviation 8.
	if failed < 50 || failed > 130 {
		t.Errorf("%d of 300 calls failed, want about 90", failed)
	}
	if got := p.Faults()[FaultError]; got != failed {
		t.Errorf("faults = %v, want %d errors", p.Faults(), failed)
	}
	if got := upstream.Load(); got != int64(300-failed) {
		t.Errorf("upstream saw %d calls, want the %d that did not fail", got, 300-failed)
	}
	wantStatus(t, client, ep, "DescribeRouteTables", http.StatusOK) // other actions untouched

	// Every action, the default code.
	p.ErrorRate("", 1, "")
	body := wantStatus(t, client, ep, "DescribeRouteTables", http.StatusInternalServerError)
	if !strings.Contains(body, "<Code>InternalError</Code>") {
		t.Errorf("body = %s", body)
	}
	p.ErrorRate("", 0, "")
	p.ErrorRate("ReplaceRoute", 0, "")
	for range 20 {
		wantStatus(t, client, ep, "ReplaceRoute", http.StatusOK)
	}
}

func TestProxy_Reset(t *testing.T) {
	t.Run("Next", func(t *testing.T) {
		p, ep, upstream := startProxy(t, ProxyOptions{})
		client := newClient(t)
		wantStatus(t, client, ep, "DescribeRouteTables", http.StatusOK) // a kept-alive connection
		p.ResetNext("CreateRoute", 2)
		wantStatus(t, client, ep, "DescribeRouteTables", http.StatusOK)
		wantReset(t, client, ep, "CreateRoute")
		wantReset(t, client, ep, "CreateRoute")
		wantStatus(t, client, ep, "CreateRoute", http.StatusOK)
		if got := upstream.Load(); got != 3 {
			t.Errorf("upstream saw %d calls, want 3 (the resets never reach it)", got)
		}
		if s, f := p.Stats(), p.Faults(); s["CreateRoute"] != 3 || f[FaultReset] != 2 {
			t.Errorf("stats = %v, faults = %v", s, f)
		}
	})

	t.Run("Rate", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{Seed: 3})
		client := newClient(t)
		p.ResetRate("", 0.5)
		resets := 0
		for range 100 {
			if _, _, err := call(client, ep, "DescribeAddresses"); err != nil {
				if !isReset(err) {
					t.Fatalf("call: %v, want a reset or an answer", err)
				}
				resets++
			}
		}
		if resets < 25 || resets > 75 {
			t.Errorf("%d of 100 calls reset, want about 50", resets)
		}
		p.ResetRate("", 0)
		for range 20 {
			wantStatus(t, client, ep, "DescribeAddresses", http.StatusOK)
		}
	})

	t.Run("SDKRetries", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{})
		p.ResetNext("DescribeAddresses", 1)
		if _, err := API(ep, "").DescribeAddresses(context.Background(), &ec2.DescribeAddressesInput{}); err != nil {
			t.Fatalf("describe after one reset: %v", err)
		}
		if n := p.Stats()["DescribeAddresses"]; n != 2 {
			t.Errorf("DescribeAddresses calls = %d, want 2 (reset, then retried)", n)
		}
	})

	t.Run("LoseAnswer", func(t *testing.T) {
		p, ep, upstream := startProxy(t, ProxyOptions{})
		client := newClient(t)
		p.LoseAnswerNext("AssociateAddress", 1)
		wantReset(t, client, ep, "AssociateAddress")
		if got := upstream.Load(); got != 1 {
			t.Errorf("upstream saw %d calls, want the lost one", got)
		}
		wantStatus(t, client, ep, "AssociateAddress", http.StatusOK)
		if f := p.Faults(); f[FaultLostAnswer] != 1 {
			t.Errorf("faults = %v", f)
		}
	})
}

func TestProxy_FailFor(t *testing.T) {
	p, ep, upstream := startProxy(t, ProxyOptions{})
	client := newClient(t)
	p.FailFor("ReplaceRoute", time.Hour, "RequestLimitExceeded")
	for range 5 {
		body := wantStatus(t, client, ep, "ReplaceRoute", http.StatusServiceUnavailable)
		if !strings.Contains(body, "<Code>RequestLimitExceeded</Code>") {
			t.Fatalf("body = %s", body)
		}
	}
	wantStatus(t, client, ep, "CreateRoute", http.StatusOK)
	if upstream.Load() != 1 {
		t.Errorf("upstream saw %d calls, want only CreateRoute", upstream.Load())
	}
	p.FailFor("ReplaceRoute", 0, "")
	wantStatus(t, client, ep, "ReplaceRoute", http.StatusOK)

	// Every action, for a short while: it ends by itself.
	p.FailFor("", 50*time.Millisecond, "InternalError")
	wantStatus(t, client, ep, "DescribeRouteTables", http.StatusInternalServerError)
	waitFor(t, func() bool {
		code, _, err := call(client, ep, "DescribeRouteTables")
		return err == nil && code == http.StatusOK
	}, "the failure to end")
	if f := p.Faults(); f[FaultError] < 6 {
		t.Errorf("faults = %v, want at least 6 errors", f)
	}
}

func TestProxy_Outage(t *testing.T) {
	p, ep, upstream := startProxy(t, ProxyOptions{})
	client := newClient(t)
	wantStatus(t, client, ep, "DescribeInstances", http.StatusOK) // a kept-alive connection
	p.StartOutage()
	if !p.InOutage() {
		t.Fatal("InOutage = false after StartOutage")
	}
	wantReset(t, client, ep, "DescribeInstances")       // on the kept-alive connection
	wantReset(t, newClient(t), ep, "ReplaceRoute")      // on a new one
	wantReset(t, client, ep, "ModifyInstanceAttribute") // and again
	if got := upstream.Load(); got != 1 {
		t.Errorf("upstream saw %d calls, want 1", got)
	}
	if s, f := p.Stats(), p.Faults(); s["DescribeInstances"] != 1 || s["ReplaceRoute"] != 0 || f[FaultOutage] != 3 {
		t.Errorf("stats = %v, faults = %v: calls refused by an outage are not counted as calls", s, f)
	}
	p.EndOutage()
	wantStatus(t, client, ep, "DescribeInstances", http.StatusOK)

	// An outage for a while ends by itself.
	p.OutageFor(50 * time.Millisecond)
	wantReset(t, client, ep, "DescribeInstances")
	waitFor(t, func() bool {
		code, _, err := call(client, ep, "DescribeInstances")
		return err == nil && code == http.StatusOK
	}, "the outage to end")
	if p.InOutage() {
		t.Error("InOutage = true after the outage ended")
	}

	// The SDK gives up on an outage rather than hanging.
	p.StartOutage()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := API(ep, "").DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err == nil || ctx.Err() != nil {
		t.Errorf("describe during an outage: err %v, context %v; want an error before the deadline", err, ctx.Err())
	}
	p.ClearFaults()
	if p.InOutage() {
		t.Error("ClearFaults left the outage on")
	}
}

func TestProxy_OnCall(t *testing.T) {
	t.Run("OutageFromHook", func(t *testing.T) {
		p, ep, upstream := startProxy(t, ProxyOptions{})
		client := newClient(t)
		var mu sync.Mutex
		var seen []int
		p.OnCall("ReplaceRoute", func(n int) {
			mu.Lock()
			seen = append(seen, n)
			mu.Unlock()
			if n == 2 {
				p.StartOutage()
			}
		})
		wantStatus(t, client, ep, "ReplaceRoute", http.StatusOK)
		wantStatus(t, client, ep, "DescribeRouteTables", http.StatusOK)
		wantStatus(t, client, ep, "ReplaceRoute", http.StatusOK) // the 2nd passes, is answered
		// The hook ran before the answer was written: the outage is on already.
		if !p.InOutage() {
			t.Fatal("outage not on when the 2nd ReplaceRoute was answered")
		}
		wantReset(t, client, ep, "ReplaceRoute")
		wantReset(t, client, ep, "DescribeRouteTables")
		mu.Lock()
		if fmt.Sprint(seen) != "[1 2]" {
			t.Errorf("hook saw %v, want [1 2]", seen)
		}
		mu.Unlock()
		if upstream.Load() != 3 {
			t.Errorf("upstream saw %d calls, want 3", upstream.Load())
		}
	})

	t.Run("HangFromHook", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{})
		client := newClient(t)
		p.OnCall("", func(n int) {
			if n == 1 {
				p.Hang()
			}
		})
		wantStatus(t, client, ep, "AssociateAddress", http.StatusOK)
		done := make(chan error, 1)
		go func() {
			_, _, err := call(client, ep, "DescribeAddresses")
			done <- err
		}()
		waitFor(t, func() bool { return p.Hanging() == 1 }, "the next call to hang")
		p.Unhang()
		if err := <-done; err != nil {
			t.Errorf("released call: %v", err)
		}
	})

	t.Run("OnlySuccessfulAnswersCount", func(t *testing.T) {
		p, ep, _ := startProxy(t, ProxyOptions{})
		client := newClient(t)
		var got atomic.Int64
		p.OnCall("CreateRoute", func(n int) { got.Store(int64(n)) })
		p.FailNext("CreateRoute", 1, "InternalError")
		wantStatus(t, client, ep, "CreateRoute", http.StatusInternalServerError)
		wantStatus(t, client, ep, "BadCreateRoute", http.StatusBadRequest) // moto says no
		if got.Load() != 0 {
			t.Fatalf("hook ran for a failed call (n = %d)", got.Load())
		}
		wantStatus(t, client, ep, "CreateRoute", http.StatusOK)
		if got.Load() != 1 {
			t.Errorf("hook n = %d, want 1", got.Load())
		}
		p.OnCall("CreateRoute", nil)
		wantStatus(t, client, ep, "CreateRoute", http.StatusOK)
		if got.Load() != 1 {
			t.Errorf("removed hook ran (n = %d)", got.Load())
		}
	})
}

// statefulUpstream is a tiny EC2 stand-in: route and address versions that mutations bump and
// Describe* calls report, e.g. <v>routes=2</v>.
func statefulUpstream(t *testing.T) string {
	var mu sync.Mutex
	routes, addrs := 0, 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		switch a := r.Form.Get("Action"); a {
		case "ReplaceRoute":
			if r.Form.Get("Fail") != "" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			routes++
		case "AssociateAddress":
			addrs++
		case "DescribeRouteTables":
			fmt.Fprintf(w, "<v>routes=%d</v>", routes)
		case "DescribeAddresses":
			fmt.Fprintf(w, "<v>addrs=%d</v>", addrs)
		}
	}))
	t.Cleanup(up.Close)
	return up.URL
}

func TestProxy_StaleReads(t *testing.T) {
	describe := func(t *testing.T, client *http.Client, ep, action string, params ...string) string {
		t.Helper()
		code, body, err := call(client, ep, action, params...)
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %v", action, code, err)
		}
		return body
	}

	t.Run("ServesTheAnswerFromBeforeTheMutation", func(t *testing.T) {
		p := NewProxy(statefulUpstream(t), ProxyOptions{})
		ep, err := p.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		client := newClient(t)
		p.StaleReads(time.Hour)

		describe(t, client, ep, "DescribeRouteTables", "Filter.1.Name", "vpc-id", "Filter.1.Value.1", "vpc-1")
		describe(t, client, ep, "DescribeAddresses")
		if _, _, err := call(client, ep, "ReplaceRoute", "Fail", "yes"); err != nil {
			t.Fatal(err)
		}
		// A failed mutation changes nothing.
		if got := describe(t, client, ep, "DescribeRouteTables", "Filter.1.Name", "vpc-id", "Filter.1.Value.1", "vpc-1"); got != "<v>routes=0</v>" {
			t.Fatalf("after a failed mutation: %s", got)
		}
		describe(t, client, ep, "ReplaceRoute")
		describe(t, client, ep, "ReplaceRoute") // within the window: still the first answer
		// The same request, parameters in another order.
		if got := describe(t, client, ep, "DescribeRouteTables", "Filter.1.Value.1", "vpc-1", "Filter.1.Name", "vpc-id"); got != "<v>routes=0</v>" {
			t.Errorf("same request after the mutations: %s, want the answer from before", got)
		}
		// A request first made after the mutation, and reads the mutation does not affect,
		// are fresh.
		if got := describe(t, client, ep, "DescribeRouteTables"); got != "<v>routes=2</v>" {
			t.Errorf("new request: %s, want a fresh answer", got)
		}
		describe(t, client, ep, "AssociateAddress")
		if got := describe(t, client, ep, "DescribeAddresses"); got != "<v>addrs=0</v>" {
			t.Errorf("addresses after AssociateAddress: %s, want the answer from before", got)
		}
		if f, s := p.Faults(), p.Stats(); f[FaultStale] != 2 || s["DescribeRouteTables"] != 4 {
			t.Errorf("faults = %v, stats = %v", f, s)
		}
		p.StaleReads(0)
		if got := describe(t, client, ep, "DescribeAddresses"); got != "<v>addrs=1</v>" {
			t.Errorf("after StaleReads(0): %s", got)
		}
	})

	t.Run("WindowEnds", func(t *testing.T) {
		p := NewProxy(statefulUpstream(t), ProxyOptions{})
		ep, err := p.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		client := newClient(t)
		p.StaleReads(50 * time.Millisecond)
		describe(t, client, ep, "DescribeRouteTables")
		describe(t, client, ep, "ReplaceRoute")
		waitFor(t, func() bool { return describe(t, client, ep, "DescribeRouteTables") == "<v>routes=1</v>" }, "a fresh answer")
		// A later mutation serves the answer just before it, not an older one.
		describe(t, client, ep, "ReplaceRoute")
		if got := describe(t, client, ep, "DescribeRouteTables"); got != "<v>routes=1</v>" && got != "<v>routes=2</v>" {
			t.Errorf("after the second mutation: %s", got)
		}
	})

	t.Run("SDKSeesOldState", func(t *testing.T) {
		m := StartMoto(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		w, err := Seed(ctx, m.Endpoint, WorldSpec{
			Instances:   []InstanceSpec{{Name: "a"}, {Name: "b"}},
			RouteTables: []RouteTableSpec{{Name: "r1", DefaultTo: 0}},
			EIPOwner:    0,
		})
		if err != nil {
			t.Fatal(err)
		}
		p := NewProxy(m.Endpoint, ProxyOptions{})
		ep, err := p.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		p.StaleReads(time.Hour)
		api := API(ep, w.Region)
		owner := func() string {
			out, err := api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{w.AllocationID}})
			if err != nil || len(out.Addresses) != 1 {
				t.Fatalf("describe addresses: %v", err)
			}
			return aws.ToString(out.Addresses[0].InstanceId)
		}
		if got := owner(); got != w.Instances[0].ID {
			t.Fatalf("owner = %s", got)
		}
		if _, err := api.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(w.AllocationID),
			InstanceId: aws.String(w.Instances[1].ID), AllowReassociation: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
		if got := owner(); got != w.Instances[0].ID {
			t.Errorf("owner right after the move = %s, want the stale %s", got, w.Instances[0].ID)
		}
		p.StaleReads(0)
		if got := owner(); got != w.Instances[1].ID {
			t.Errorf("owner = %s, want %s", got, w.Instances[1].ID)
		}
	})
}

func TestIMDSProxy(t *testing.T) {
	m := StartIMDS(t, IMDSValues{InstanceID: "i-0123456789abcdef0", Region: "eu-west-3", LocalIPv4: "10.0.0.5"})
	p, ep := StartIMDSProxy(t, m, ProxyOptions{})
	client := newClient(t)
	token := func() error {
		req, _ := http.NewRequest(http.MethodPut, ep+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if err := token(); err != nil {
		t.Fatalf("token through the proxy: %v", err)
	}
	if n := p.Stats()["PUT /latest/api/token"]; n != 1 {
		t.Errorf("stats = %v", p.Stats())
	}

	p.StartOutage()
	err := token()
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("token during an outage: %v, want an error at once", err)
	}
	p.EndOutage()

	p.SetLatency(100*time.Millisecond, 0)
	start := time.Now()
	if err := token(); err != nil {
		t.Fatalf("slow token: %v", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("slow token took %v, want at least 100ms", took)
	}
}
