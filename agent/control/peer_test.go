package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// syncBuffer is a bytes.Buffer the server's logger and the test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGuarded starts a server for ctrl with opts whose warnings go to the returned buffer.
func startGuarded(t *testing.T, ctrl *fakeController, opts ...Option) (path string, logs *syncBuffer) {
	t.Helper()
	logs = &syncBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn, JSONFormat: true})
	path = sockPath(t)
	s := NewServer(ctrl, path, logger, opts...)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return path, logs
}

func TestServer_PeerCredentials(t *testing.T) {
	me := os.Geteuid()
	t.Run("RootAndOwnUserByDefault", func(t *testing.T) {
		fake := &fakeController{}
		path, logs := startGuarded(t, fake)
		if _, err := NewClient(path).Members(context.Background()); err != nil {
			t.Fatalf("members as uid %d: %v", me, err)
		}
		if got := fake.Calls(); len(got) != 1 {
			t.Errorf("agent saw %q, want one members call", got)
		}
		if logs.String() != "" {
			t.Errorf("an accepted connection logged:\n%s", logs.String())
		}
	})
	t.Run("OtherUserRefused", func(t *testing.T) {
		fake := &fakeController{}
		path, logs := startGuarded(t, fake, AllowUIDs(me+4242))
		want := fmt.Sprintf("the control socket refused this user (uid %d): run as root or as the agent's user", me)
		c := NewClient(path)
		ops := map[string]func() error{
			"members":  func() error { _, err := c.Members(context.Background()); return err },
			"status":   func() error { _, err := c.Status(context.Background()); return err },
			"takeover": func() error { _, err := c.Takeover(context.Background(), []string{"az-a"}); return err },
			"yield":    func() error { _, err := c.Yield(context.Background(), nil); return err },
			"resume":   func() error { _, err := c.Resume(context.Background(), nil); return err },
		}
		for op, call := range ops {
			err := call()
			var pe *PermissionError
			if !errors.As(err, &pe) || pe.UID != me || err.Error() != want {
				t.Errorf("%s: err = %#v (%v), want a PermissionError saying %q", op, err, err, want)
			}
		}
		if got := fake.Calls(); len(got) != 0 {
			t.Errorf("the agent was asked %q by a refused user", got)
		}
		// One warning per connection, naming who connected.
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		if len(lines) != len(ops) {
			t.Errorf("%d log lines for %d refused connections:\n%s", len(lines), len(ops), logs.String())
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
			t.Fatalf("log line %q: %v", lines[0], err)
		}
		if rec["@level"] != "warn" || !strings.HasPrefix(rec["@message"].(string), "control socket refused a connection") ||
			rec["uid"] != float64(me) || rec["pid"] != float64(os.Getpid()) {
			t.Errorf("log = %v; want a warning with uid %d and pid %d", rec, me, os.Getpid())
		}
	})
	t.Run("RefusalIsJSON403BeforeRouting", func(t *testing.T) {
		path, _ := startGuarded(t, &fakeController{}, AllowUIDs(me+4242))
		hc := NewClient(path).http
		for _, target := range []string{"GET " + pathMembers, "POST " + pathTakeover, "GET /nowhere"} {
			method, p, _ := strings.Cut(target, " ")
			req, err := http.NewRequest(method, "http://natganker"+p, strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e errorResponse
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/json" ||
				json.Unmarshal(body, &e) != nil || e.Code != codeUserRefused || e.UID == nil || *e.UID != me ||
				!strings.Contains(e.Error, "refused this user") {
				t.Errorf("%s: %s %s; want 403 with a JSON refusal naming uid %d", target, resp.Status, body, me)
			}
		}
	})
}

// helperSocketEnv names the socket the helper process talks to when the test binary runs as
// another user.
const helperSocketEnv = "NATGANKER_CONTROL_HELPER_SOCKET"

// TestHelperClient is not a test: it is the client run as another user by
// TestServer_OtherUserForReal. It prints what Members returned and exits.
func TestHelperClient(t *testing.T) {
	path := os.Getenv(helperSocketEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	_, err := NewClient(path).Members(context.Background())
	var pe *PermissionError
	fmt.Printf("uid=%d permission=%v error=%v\n", os.Geteuid(), errors.As(err, &pe), err)
	os.Exit(0)
}

// TestServer_OtherUserForReal runs the client as user nobody (uid 65534), against the socket's
// own mode 0600 first and then, with the mode loosened by mistake, against the agent's check.
func TestServer_OtherUserForReal(t *testing.T) {
	const nobody = 65534
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	// The test binary and the socket's directory must be reachable by nobody.
	bindir, err := os.MkdirTemp("", "ngctl-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bindir) })
	bin := filepath.Join(bindir, "control.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := &fakeController{}
	path, logs := startGuarded(t, fake)
	for _, dir := range []string{bindir, filepath.Dir(path)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runAsNobody := func() string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestHelperClient$")
		// The race detector otherwise waits a second at exit.
		cmd.Env = append(os.Environ(), helperSocketEnv+"="+path, "GORACE=atexit_sleep_ms=0")
		cmd.Dir = bindir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	want := fmt.Sprintf("uid=%d permission=true error=the control socket refused this user (uid %d): run as root or as the agent's user", nobody, nobody)

	t.Run("SocketModeRefuses", func(t *testing.T) {
		if got := runAsNobody(); got != want {
			t.Errorf("helper printed %q, want %q", got, want)
		}
		if logs.String() != "" {
			t.Errorf("the connection reached the agent:\n%s", logs.String())
		}
	})
	t.Run("AgentRefusesWhenModeLoosened", func(t *testing.T) {
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
		if got := runAsNobody(); got != want {
			t.Errorf("helper printed %q, want %q", got, want)
		}
		if !strings.Contains(logs.String(), fmt.Sprintf(`"uid":%d`, nobody)) {
			t.Errorf("no warning naming uid %d:\n%s", nobody, logs.String())
		}
	})
	if got := fake.Calls(); len(got) != 0 {
		t.Errorf("the agent was asked %q by nobody", got)
	}
}
