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
		if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
			t.Errorf("directory holds %d entries, want only the socket", len(entries))
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
		first := &fakeController{}
		startServer(t, first, path)
		second := NewServer(&fakeController{}, path, hclog.NewNullLogger())
		err := second.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "another agent is listening on "+path) {
			t.Fatalf("second start: err = %v, want refusal", err)
		}
		if err := second.Close(); err != nil {
			t.Errorf("close of a server that never started: %v", err)
		}
		if _, err := NewClient(path).Members(context.Background()); err != nil {
			t.Fatalf("first server after the refused start: %v", err)
		}
		if len(first.Calls()) != 1 {
			t.Errorf("first server answered %d calls, want 1", len(first.Calls()))
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
