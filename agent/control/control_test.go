package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/natganker/natganker/agent"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeController records the calls it receives and answers with canned values.
type fakeController struct {
	mu    sync.Mutex
	calls []string // "op groups"

	members []agent.MemberView
	status  agent.StatusView
	err     error           // returned by every call when set
	block   bool            // takeover waits for its context
	entered chan struct{}   // closed when a blocking takeover starts
	known   map[string]bool // groups accepted by actions; nil accepts all
}

func (f *fakeController) record(op string, groups []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+strings.Join(groups, ","))
}

func (f *fakeController) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeController) Members(context.Context) ([]agent.MemberView, error) {
	f.record("members", nil)
	return f.members, f.err
}

func (f *fakeController) Status(context.Context) (agent.StatusView, error) {
	f.record("status", nil)
	return f.status, f.err
}

func (f *fakeController) act(ctx context.Context, op string, groups []string) (agent.ActionResult, error) {
	f.record(op, groups)
	if f.err != nil {
		return agent.ActionResult{}, f.err
	}
	for _, g := range groups {
		if f.known != nil && !f.known[g] {
			return agent.ActionResult{}, fmt.Errorf("%w %q", agent.ErrUnknownGroup, g)
		}
	}
	if op == "takeover" && f.block {
		close(f.entered)
		<-ctx.Done()
		return agent.ActionResult{}, ctx.Err()
	}
	return agent.ActionResult{Groups: groups, Message: op + " done"}, nil
}

func (f *fakeController) Yield(ctx context.Context, g []string) (agent.ActionResult, error) {
	return f.act(ctx, "yield", g)
}

func (f *fakeController) Resume(ctx context.Context, g []string) (agent.ActionResult, error) {
	return f.act(ctx, "resume", g)
}

func (f *fakeController) Takeover(ctx context.Context, g []string) (agent.ActionResult, error) {
	return f.act(ctx, "takeover", g)
}

// sockPath returns a socket path in a fresh directory short enough for a unix socket name.
func sockPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ngctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

// startServer starts a server for ctrl on path and closes it when the test ends.
func startServer(t *testing.T, ctrl agent.Controller, path string) *Server {
	t.Helper()
	s := NewServer(ctrl, path, hclog.NewNullLogger())
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return s
}

func TestControl_RoundTrip(t *testing.T) {
	started := time.Date(2026, 11, 29, 17, 0, 0, 0, time.UTC)
	fake := &fakeController{
		members: []agent.MemberView{
			{Name: "i-a", Address: "10.0.0.1:7946", State: "alive", Self: true, Healthy: true,
				Groups: []agent.MemberGroupView{{Name: "az-a", Priority: 200, Owns: true}}},
			{Name: "i-b", Address: "10.0.0.2:7946", State: "suspect", Reason: "egress probe failed",
				Groups: []agent.MemberGroupView{{Name: "az-a", Priority: 100, Yielded: true}}},
		},
		status: agent.StatusView{Node: "i-a", Version: "1.2.3", Groups: []agent.GroupView{{
			Name: "az-a", DesiredOwner: "i-a", EC2Owner: "i-a",
			ElasticIP:  agent.EIPView{AllocationID: "eipalloc-1", PublicIP: "198.51.100.7", InstanceID: "i-a"},
			Routes:     []agent.RouteView{{RouteTableID: "rtb-1", Destination: "0.0.0.0/0", Target: "i-a", State: "active"}},
			ObservedAt: started,
			LastTakeover: &agent.TakeoverView{Group: "az-a", From: "i-b", To: "i-a", Reason: "peer dead",
				Started: started, Detected: 800 * time.Millisecond, EIPMoved: 400 * time.Millisecond},
		}}},
	}
	c := NewClient(startServer(t, fake, sockPath(t)).path)
	ctx := context.Background()

	members, err := c.Members(ctx)
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	if !reflect.DeepEqual(members, fake.members) {
		t.Errorf("members = %+v, want %+v", members, fake.members)
	}
	status, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if !reflect.DeepEqual(status, fake.status) {
		t.Errorf("status = %+v, want %+v", status, fake.status)
	}

	actions := []struct {
		name   string
		call   func(context.Context, []string) (agent.ActionResult, error)
		groups []string
	}{
		{"yield", c.Yield, []string{"az-a", "az-b"}},
		{"resume", c.Resume, nil},
		{"takeover", c.Takeover, []string{"az-b"}},
	}
	for _, a := range actions {
		res, err := a.call(ctx, a.groups)
		if err != nil {
			t.Fatalf("%s: %v", a.name, err)
		}
		want := agent.ActionResult{Groups: a.groups, Message: a.name + " done"}
		if !reflect.DeepEqual(res, want) {
			t.Errorf("%s = %+v, want %+v", a.name, res, want)
		}
	}
	wantCalls := []string{"members ", "status ", "yield az-a,az-b", "resume ", "takeover az-b"}
	if got := fake.Calls(); !reflect.DeepEqual(got, wantCalls) {
		t.Errorf("calls = %q, want %q", got, wantCalls)
	}
}

func TestControl_Errors(t *testing.T) {
	t.Run("UnknownGroup", func(t *testing.T) {
		fake := &fakeController{known: map[string]bool{"az-a": true}}
		c := NewClient(startServer(t, fake, sockPath(t)).path)
		_, err := c.Takeover(context.Background(), []string{"az-a", "nope"})
		if !errors.Is(err, agent.ErrUnknownGroup) {
			t.Fatalf("err = %v, want ErrUnknownGroup", err)
		}
		var re *RemoteError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
			t.Fatalf("err = %#v, want a RemoteError with status 400", err)
		}
		if want := `takeover: unknown group "nope"`; err.Error() != want {
			t.Errorf("message = %q, want %q", err.Error(), want)
		}
	})
	t.Run("AgentFailure", func(t *testing.T) {
		fake := &fakeController{err: errors.New("describe addresses: throttled")}
		c := NewClient(startServer(t, fake, sockPath(t)).path)
		_, err := c.Status(context.Background())
		var re *RemoteError
		if !errors.As(err, &re) || re.StatusCode != http.StatusInternalServerError {
			t.Fatalf("err = %#v, want a RemoteError with status 500", err)
		}
		if errors.Is(err, agent.ErrUnknownGroup) {
			t.Errorf("a plain failure matched ErrUnknownGroup")
		}
		if want := "status: describe addresses: throttled"; err.Error() != want {
			t.Errorf("message = %q, want %q", err.Error(), want)
		}
	})
	t.Run("BadRequests", func(t *testing.T) {
		path := startServer(t, &fakeController{}, sockPath(t)).path
		hc := NewClient(path).http
		cases := []struct {
			name, method, path, body string
			status                   int
		}{
			{"UnknownField", "POST", pathYield, `{"group":["a"]}`, http.StatusBadRequest},
			{"NotJSON", "POST", pathTakeover, `az-a`, http.StatusBadRequest},
			{"Trailing", "POST", pathResume, `{} {}`, http.StatusBadRequest},
			{"WrongMethod", "GET", pathTakeover, ``, http.StatusNotFound},
			{"NoRoute", "GET", "/v2/members", ``, http.StatusNotFound},
			{"EmptyBodyMeansAll", "POST", pathResume, ``, http.StatusOK},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, "http://natganker"+tc.path, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("status = %d, want %d", resp.StatusCode, tc.status)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("content type = %q, want application/json", ct)
				}
			})
		}
	})
	t.Run("AgentNotRunning", func(t *testing.T) {
		path := sockPath(t)
		_, err := NewClient(path).Members(context.Background())
		want := "cannot reach the agent at " + path + ": is natganker-agent running? ("
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("err = %v, want prefix %q", err, want)
		}
		var ue *UnreachableError
		if !errors.As(err, &ue) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %#v, want an UnreachableError wrapping ENOENT", err)
		}
	})
}

func TestServer_Socket(t *testing.T) {
	t.Run("Mode0600AndParentDir", func(t *testing.T) {
		path := filepath.Join(filepath.Dir(sockPath(t)), "run", "agent.sock")
		startServer(t, &fakeController{}, path)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
		}
		di, err := os.Stat(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm() != 0o755 {
			t.Errorf("directory mode = %v, want 0755", di.Mode().Perm())
		}
		var names []string
		entries, _ := os.ReadDir(filepath.Dir(path))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if want := []string{"agent.sock", "agent.sock.lock"}; !reflect.DeepEqual(names, want) {
			t.Errorf("directory holds %q, want %q", names, want)
		}
	})
	t.Run("StaleSocketRemoved", func(t *testing.T) {
		path := sockPath(t)
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("stale socket missing before the test: %v", err)
		}
		startServer(t, &fakeController{}, path)
		if _, err := NewClient(path).Members(context.Background()); err != nil {
			t.Errorf("members after replacing a stale socket: %v", err)
		}
	})
	t.Run("LiveSocketRefused", func(t *testing.T) {
		path := sockPath(t)
		first := &fakeController{members: []agent.MemberView{{Name: "i-first", Self: true}, {Name: "i-peer"}}}
		startServer(t, first, path)
		second := NewServer(&fakeController{}, path, hclog.NewNullLogger())
		err := second.Start(context.Background())
		var inUse *InUseError
		if !errors.As(err, &inUse) {
			t.Fatalf("second start: err = %v, want an InUseError", err)
		}
		want := fmt.Sprintf("control socket %s is served by a running agent (pid %d, instance i-first)", path, os.Getpid())
		if err.Error() != want {
			t.Errorf("message = %q, want %q", err.Error(), want)
		}
		if err := second.Close(); err != nil {
			t.Errorf("close of a server that never started: %v", err)
		}
		if _, err := NewClient(path).Members(context.Background()); err != nil {
			t.Fatalf("first server after the refused start: %v", err)
		}
		// One call to learn who holds the socket, one from this test.
		if got := first.Calls(); len(got) != 2 {
			t.Errorf("first server answered %q, want two members calls", got)
		}
	})
	t.Run("OlderAgentWithoutLockRefused", func(t *testing.T) {
		// An agent that predates the lock file, or any other program, serving the path.
		path := sockPath(t)
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		// It hangs up on every connection: not an agent, so no instance to name.
		served := make(chan struct{})
		go func() {
			defer close(served)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		defer func() { ln.Close(); <-served }()
		_, err = Listen(path)
		var inUse *InUseError
		if !errors.As(err, &inUse) || inUse.PID != os.Getpid() || inUse.Node != "" {
			t.Fatalf("err = %#v, want an InUseError naming this process and no instance", err)
		}
		if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("the served socket was touched: %v", err)
		}
	})
	t.Run("ClaimedButNotServedRefused", func(t *testing.T) {
		// The agent claims its socket before it joins the cluster and serves it later: the
		// claim alone must keep a second agent out.
		path := sockPath(t)
		first, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Listen(path)
		var inUse *InUseError
		if !errors.As(err, &inUse) || inUse.Socket != path || inUse.PID != os.Getpid() {
			t.Fatalf("second claim: err = %#v, want an InUseError naming this process", err)
		}
		if err := first.Close(); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there after release: %v", err)
		}
		again, err := Listen(path)
		if err != nil {
			t.Fatalf("claim after release: %v", err)
		}
		if err := again.Close(); err != nil {
			t.Errorf("release: %v", err)
		}
	})
	t.Run("ConcurrentClaimsOneWins", func(t *testing.T) {
		path := sockPath(t)
		const n = 8
		var wg sync.WaitGroup
		lns := make([]*Listener, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				lns[i], errs[i] = Listen(path)
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i := range n {
			var inUse *InUseError
			switch {
			case errs[i] == nil:
				won++
				defer lns[i].Close()
			case !errors.As(errs[i], &inUse):
				t.Errorf("claim %d: %v, want an InUseError", i, errs[i])
			}
		}
		if won != 1 {
			t.Errorf("%d of %d concurrent claims won, want exactly 1", won, n)
		}
	})
	t.Run("ServerOnClaimedSocket", func(t *testing.T) {
		path := sockPath(t)
		ln, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		s := NewServerOn(&fakeController{}, ln, nil)
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := NewClient(path).Members(context.Background()); err != nil {
			t.Errorf("members: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		// No longer served, still claimed: an agent leaving the cluster keeps the next one
		// out until it is gone.
		if _, err := NewClient(path).Members(context.Background()); err == nil {
			t.Errorf("members answered after Close")
		}
		_, err = Listen(path)
		want := "control socket " + path + " is held by another agent that is starting or stopping"
		if err == nil || err.Error() != want {
			t.Errorf("claim while stopping: err = %v, want %q", err, want)
		}
		if err := ln.Close(); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there after release: %v", err)
		}
		if err := ln.Close(); err != nil {
			t.Errorf("second release: %v", err)
		}
	})
	t.Run("ClaimedSocketNeverServed", func(t *testing.T) {
		path := sockPath(t)
		ln, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := NewServerOn(&fakeController{}, ln, nil).Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := ln.Close(); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there after release: %v", err)
		}
	})
	t.Run("DirectoryNotCreatable", func(t *testing.T) {
		file := filepath.Join(filepath.Dir(sockPath(t)), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(filepath.Join(file, "agent.sock"))
		if err == nil || !strings.HasPrefix(err.Error(), "create control socket directory: ") || !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("err = %v, want the directory named as the problem", err)
		}
	})
	t.Run("NotASocketRefused", func(t *testing.T) {
		path := sockPath(t)
		if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := NewServer(&fakeController{}, path, nil).Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "is not a socket") {
			t.Fatalf("err = %v, want refusal", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Errorf("file was changed to %q", b)
		}
	})
	t.Run("CloseRemovesSocketAndIsIdempotent", func(t *testing.T) {
		path := sockPath(t)
		s := NewServer(&fakeController{}, path, nil)
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if err := s.Close(); err != nil {
				t.Fatalf("close #%d: %v", i+1, err)
			}
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there after Close: %v", err)
		}
		if err := s.Start(context.Background()); err == nil {
			t.Errorf("start after close succeeded")
		}
	})
	t.Run("CloseCancelsRequestsInFlight", func(t *testing.T) {
		path := sockPath(t)
		fake := &fakeController{block: true, entered: make(chan struct{})}
		s := NewServer(fake, path, nil)
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := NewClient(path).Takeover(context.Background(), nil)
			errc <- err
		}()
		<-fake.entered
		start := time.Now()
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("close took %v with a request in flight", d)
		}
		if err := <-errc; err == nil {
			t.Errorf("takeover cut off by Close returned no error")
		}
	})
}
