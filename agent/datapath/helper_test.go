package datapath

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The tests that touch the kernel run their subject in a network namespace of their own.
// Rather than switching namespaces under the Go scheduler (goroutines started by the code
// under test, like the egress probe, could land on threads of the host namespace), the
// test binary re-executes itself under `ip netns exec NS` in helper mode: a small server
// that reads one JSON request per line on stdin and answers on stdout.

const helperEnv = "NGDP_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(serveHelper(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

type helperRequest struct {
	Op     string      `json:"op"` // new, ensure, check, remove, snat, listen, close, accepted, dial
	Config *Config     `json:"config,omitempty"`
	Addr   string      `json:"addr,omitempty"`
	SNAT   []SourceNAT `json:"snat,omitempty"`
}

type helperResponse struct {
	Err     string        `json:"err,omitempty"`
	Health  Health        `json:"health"`
	Elapsed time.Duration `json:"elapsed"`
	Addrs   []string      `json:"addrs,omitempty"`
}

func serveHelper(in io.Reader, out io.Writer) int {
	logger := hclog.New(&hclog.LoggerOptions{Name: "helper", Output: os.Stderr, Level: hclog.Debug})
	var (
		d        *Datapath
		ln       net.Listener
		mu       sync.Mutex
		accepted []string
	)
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	for {
		var req helperRequest
		if err := dec.Decode(&req); err != nil {
			if err == io.EOF {
				return 0
			}
			fmt.Fprintln(os.Stderr, "helper: decode:", err)
			return 2
		}
		var resp helperResponse
		start := time.Now()
		var err error
		ctx := context.Background()
		switch req.Op {
		case "new":
			d, err = New(*req.Config, logger)
		case "ensure":
			err = d.Ensure(ctx)
		case "remove":
			err = d.Remove(ctx)
		case "check":
			resp.Health = d.Check(ctx)
		case "snat":
			d.SetSourceNAT(req.SNAT)
		case "listen":
			ln, err = net.Listen("tcp4", req.Addr)
			if err == nil {
				go func(ln net.Listener) {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						mu.Lock()
						accepted = append(accepted, c.RemoteAddr().String())
						mu.Unlock()
						c.Close()
					}
				}(ln)
			}
		case "close":
			err = ln.Close()
		case "accepted":
			mu.Lock()
			resp.Addrs = append([]string(nil), accepted...)
			mu.Unlock()
		case "dial":
			var c net.Conn
			c, err = net.DialTimeout("tcp4", req.Addr, 2*time.Second)
			if err == nil {
				resp.Addrs = []string{c.LocalAddr().String()}
				c.Close()
			}
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		resp.Elapsed = time.Since(start)
		if err != nil {
			resp.Err = err.Error()
		}
		if err := enc.Encode(resp); err != nil {
			return 2
		}
	}
}

// helper is the test's end of a helper process running in a namespace.
type helper struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr bytes.Buffer
}

func startHelper(t *testing.T, ns string) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t}
	h.cmd = exec.Command("ip", "netns", "exec", ns, exe)
	h.cmd.Env = append(os.Environ(), helperEnv+"=1")
	h.cmd.Stderr = &h.stderr
	h.stdin, err = h.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.stdout = bufio.NewReader(out)
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start helper in %s: %v", ns, err)
	}
	t.Cleanup(func() {
		h.stdin.Close()
		err := h.cmd.Wait()
		if err != nil || t.Failed() {
			t.Logf("helper in %s exited (%v); its log:\n%s", ns, err, h.stderr.String())
		}
	})
	return h
}

func (h *helper) do(req helperRequest) helperResponse {
	h.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.stdin.Write(append(b, '\n')); err != nil {
		h.t.Fatalf("helper %s: %v", req.Op, err)
	}
	line, err := h.stdout.ReadBytes('\n')
	if err != nil {
		h.t.Fatalf("helper %s: read answer: %v\n%s", req.Op, err, h.stderr.String())
	}
	var resp helperResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		h.t.Fatalf("helper %s: %v: %q", req.Op, err, line)
	}
	return resp
}

// must runs an operation that must succeed.
func (h *helper) must(op string) {
	h.t.Helper()
	if r := h.do(helperRequest{Op: op}); r.Err != "" {
		h.t.Fatalf("%s: %s", op, r.Err)
	}
}

func (h *helper) newDatapath(cfg Config) {
	h.t.Helper()
	if r := h.do(helperRequest{Op: "new", Config: &cfg}); r.Err != "" {
		h.t.Fatalf("New(%+v): %s", cfg, r.Err)
	}
}

func (h *helper) check() (Health, time.Duration) {
	h.t.Helper()
	r := h.do(helperRequest{Op: "check"})
	return r.Health, r.Elapsed
}

// waitHealth polls Check until its reason is want ("" for healthy) or the deadline passes.
func (h *helper) waitHealth(want string, within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	var got Health
	for {
		got, _ = h.check()
		if got.Reason == want && got.Healthy == (want == "") {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("Check: got %+v, want reason %q within %s", got, want, within)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// lab is a NAT namespace whose public interface pub0 (198.18.0.1/24) is one end of a veth
// pair; the other end, pub0p (198.18.0.2/24), lives in a "far" namespace standing for the
// internet.
type lab struct {
	t   *testing.T
	ns  string
	far string
}

const (
	labPublicIf   = "pub0"
	labPublicAddr = "198.18.0.1"
	labFarAddr    = "198.18.0.2"
	labSource     = "198.18.0.0/16"
)

func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and program nftables")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not found (install iproute2 and nftables)", bin)
		}
	}
}

func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := prefix + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot create network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v: %s", ns, err, out)
		}
	})
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireLab(t)
	l := &lab{t: t, ns: newNamespace(t, "ngdp-test-"), far: newNamespace(t, "ngdp-far-")}
	if out, err := exec.Command("ip", "netns", "exec", l.ns, "nft", "add", "table", "ip", "probe").CombinedOutput(); err != nil {
		t.Skipf("skipping: nftables unavailable in a network namespace: %v: %s", err, out)
	}
	l.nft("delete", "table", "ip", "probe")
	run(t, "ip", "-n", l.ns, "link", "add", labPublicIf, "type", "veth", "peer", "name", "pub0p", "netns", l.far)
	run(t, "ip", "-n", l.ns, "addr", "add", labPublicAddr+"/24", "dev", labPublicIf)
	run(t, "ip", "-n", l.far, "addr", "add", labFarAddr+"/24", "dev", "pub0p")
	run(t, "ip", "-n", l.ns, "link", "set", labPublicIf, "up")
	run(t, "ip", "-n", l.far, "link", "set", "pub0p", "up")
	return l
}

// nft runs nft(8) in the NAT namespace: the independent witness of what was installed.
func (l *lab) nft(args ...string) string {
	l.t.Helper()
	return run(l.t, "ip", append([]string{"netns", "exec", l.ns, "nft"}, args...)...)
}

// sysctl reads a sysctl in the NAT namespace, e.g. "net/ipv4/ip_forward".
func (l *lab) sysctl(key string) string {
	l.t.Helper()
	return strings.TrimSpace(run(l.t, "ip", "netns", "exec", l.ns, "cat", "/proc/sys/"+key))
}

func (l *lab) setSysctl(key, value string) {
	l.t.Helper()
	run(l.t, "ip", "netns", "exec", l.ns, "sh", "-c", "echo "+value+" > /proc/sys/"+key)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nftScript feeds a ruleset script to `nft -f -` in the NAT namespace.
func (l *lab) nftScript(script string) {
	l.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft -f - <<%q: %v: %s", script, err, out)
	}
}

// waitAccepted polls a listening helper until it has recorded at least n connections and
// returns them all. It records each in its own goroutine after the handshake: a dial that
// returned does not mean the connection is in the list yet.
func (h *helper) waitAccepted(n int) []string {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		accepted := h.do(helperRequest{Op: "accepted"}).Addrs
		if len(accepted) >= n {
			return accepted
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the listener recorded %d connections within 5s, want %d: %v", len(accepted), n, accepted)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}
