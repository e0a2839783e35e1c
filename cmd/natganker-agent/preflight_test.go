package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/natganker/natganker/agent/control"
	"github.com/natganker/natganker/config"
)

// shortDir returns a fresh directory whose path is short enough for unix socket names.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ngpre")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// aFile creates a regular file in dir, to stand where a directory is needed.
func aFile(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freeGossipPort returns a loopback port that was free for both TCP and UDP a moment ago,
// and is held for one of them, until the test ends, when hold is "tcp" or "udp".
func freeGossipPort(t *testing.T, hold string) int {
	t.Helper()
	for range 100 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			tl.Close() // the UDP port is taken: try another
			continue
		}
		switch hold {
		case "tcp":
			ul.Close()
			t.Cleanup(func() { tl.Close() })
		case "udp":
			tl.Close()
			t.Cleanup(func() { ul.Close() })
		default:
			tl.Close()
			ul.Close()
		}
		return port
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}

func TestPreflight(t *testing.T) {
	// Running as root defeats permission bits, so unusable directories are made by putting a
	// regular file where a directory must be.
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string, cfg *config.Config)
		want  string // the whole error; "" means success
	}{
		{"AllGood", func(*testing.T, string, *config.Config) {}, ""},
		{"StaleSocketTakenOver", func(t *testing.T, dir string, cfg *config.Config) {
			ln, err := net.Listen("unix", cfg.Control.Socket)
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			ln.Close()
		}, ""},
		{"StateFileDisabled", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Control.StateFile = ""
		}, ""},
		{"DatapathNotManaged", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Datapath.PublicInterface = "ngnone0"
		}, ""},
		{"SocketDirectoryNotCreatable", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Control.Socket = filepath.Join(aFile(t, dir), "agent.sock")
		}, "control.socket: create control socket directory: mkdir DIR/file: not a directory"},
		{"SocketNotASocket", func(t *testing.T, dir string, cfg *config.Config) {
			if err := os.WriteFile(cfg.Control.Socket, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "control.socket: control socket DIR/run/agent.sock exists and is not a socket (a regular file)"},
		{"StateDirectoryNotCreatable", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Control.StateFile = filepath.Join(aFile(t, dir), "lib", "state.json")
		}, "control.state_file: create directory: mkdir DIR/file: not a directory"},
		{"StateDirectoryNotWritable", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Control.StateFile = "/proc/natganker-state.json" // procfs creates no files, even for root
		}, "control.state_file: directory /proc is not writable: open /proc/.natganker-check-*: no such file or directory"},
		{"GossipTCPPortInUse", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Gossip.BindPort = freeGossipPort(t, "tcp")
		}, "gossip.bind: listen tcp 127.0.0.1:PORT: bind: address already in use"},
		{"GossipUDPPortInUse", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Gossip.BindPort = freeGossipPort(t, "udp")
		}, "gossip.bind: listen udp 127.0.0.1:PORT: bind: address already in use"},
		{"GossipAddressNotLocal", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Gossip.BindAddr = "192.0.2.1"
		}, "gossip.bind: listen tcp 192.0.2.1:PORT: bind: cannot assign requested address"},
		{"PublicInterfaceMissing", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Datapath.Manage = true
			cfg.Datapath.PublicInterface = "ngnone0"
		}, `datapath.public_interface: no interface "ngnone0" on this host (datapath.manage is on)`},
		{"PublicInterfacePresent", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Datapath.Manage = true
			cfg.Datapath.PublicInterface = "lo"
		}, ""},
		{"EveryProblemAtOnce", func(t *testing.T, dir string, cfg *config.Config) {
			cfg.Control.StateFile = filepath.Join(aFile(t, dir), "state.json")
			cfg.Gossip.BindPort = freeGossipPort(t, "tcp")
			cfg.Datapath.Manage = true
			cfg.Datapath.PublicInterface = "ngnone0"
		}, "3 problems on this host:\n" +
			"control.state_file: create directory: mkdir DIR/file: not a directory\n" +
			"gossip.bind: listen tcp 127.0.0.1:PORT: bind: address already in use\n" +
			`datapath.public_interface: no interface "ngnone0" on this host (datapath.manage is on)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			cfg := config.Default()
			cfg.Control.Socket = filepath.Join(dir, "run", "agent.sock")
			cfg.Control.StateFile = filepath.Join(dir, "lib", "state.json")
			cfg.Gossip.BindAddr = "127.0.0.1"
			cfg.Gossip.BindPort = freeGossipPort(t, "")
			if err := os.MkdirAll(filepath.Dir(cfg.Control.Socket), 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, dir, cfg)

			ln, err := preflight(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("preflight: %v", err)
				}
				// Claimed: connections wait for the agent to serve them.
				conn, err := net.Dial("unix", cfg.Control.Socket)
				if err != nil {
					t.Errorf("the claimed socket refuses connections: %v", err)
				} else {
					conn.Close()
				}
				if err := ln.Close(); err != nil {
					t.Errorf("release: %v", err)
				}
				if cfg.Control.StateFile != "" {
					if entries, _ := os.ReadDir(filepath.Dir(cfg.Control.StateFile)); len(entries) != 0 {
						t.Errorf("the state check left %d files behind", len(entries))
					}
				}
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("preflight passed, want %q", tc.want)
			}
			got := strings.ReplaceAll(err.Error(), dir, "DIR")
			got = strings.ReplaceAll(got, fmt.Sprintf(":%d", cfg.Gossip.BindPort), ":PORT")
			if !matchStar(got, tc.want) {
				t.Errorf("error:\n%s\nwant:\n%s", got, tc.want)
			}
			// A refused start leaves the socket free for the next attempt.
			if fi, err := os.Lstat(cfg.Control.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
				t.Errorf("a refused start left its socket behind")
			}
		})
	}
}

// matchStar reports whether s equals pattern, where each * in pattern stands for any run of
// characters other than a slash or a line break.
func matchStar(s, pattern string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1:] {
		i := strings.Index(s, p)
		if i < 0 || strings.ContainsAny(s[:i], "/\n") {
			return false
		}
		s = s[i+len(p):]
	}
	return s == ""
}

// imdsSpy is an instance metadata service that counts the requests it gets and answers none.
func imdsSpy(t *testing.T) (url string, asked *atomic.Int64) {
	t.Helper()
	asked = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "spy", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, asked
}

// localConfig is a valid configuration that keeps its control socket and state file in dir,
// binds gossip on a loopback port and asks imds who this instance is.
func localConfig(dir, imds string, port int) string {
	return fmt.Sprintf(`
node {
  imds_endpoint = %q
}
gossip {
  bind        = "127.0.0.1:%d"
  encrypt_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
  peers       = ["198.18.1.11", "198.18.2.11"]
}
group "az-a" {
  priority   = 200
  elastic_ip = "eipalloc-0123456789abcdef0"
}
control {
  socket     = %q
  state_file = %q
}
log {
  format = "json"
}
`, imds, port, filepath.Join(dir, "agent.sock"), filepath.Join(dir, "lib", "state.json"))
}

func TestRunCommand_HostChecks(t *testing.T) {
	t.Run("LiveSocketRefusedBeforeAnything", func(t *testing.T) {
		busy := startAgent(t, newFake())
		imds, asked := imdsSpy(t)
		r := run(t, "run", "-config", writeFile(t, "agent.hcl", localConfig(filepath.Dir(busy), imds, freeGossipPort(t, ""))))
		want := fmt.Sprintf("Error: control socket %s is served by a running agent (pid %d, instance i-0aaa): stop it first or set control.socket\n",
			busy, os.Getpid())
		if r.code != exitFailure || !strings.HasSuffix(r.stderr, want) {
			t.Errorf("code %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
		}
		if n := asked.Load(); n != 0 {
			t.Errorf("the instance metadata service was asked %d times before the refusal", n)
		}
		if _, err := control.NewClient(busy).Members(context.Background()); err != nil {
			t.Errorf("the running agent's socket stopped answering: %v", err)
		}
	})
	t.Run("EveryProblemBeforeAnything", func(t *testing.T) {
		dir := shortDir(t)
		imds, asked := imdsSpy(t)
		port := freeGossipPort(t, "udp")
		cfg := localConfig(dir, imds, port)
		cfg = strings.Replace(cfg, filepath.Join(dir, "lib", "state.json"), filepath.Join(aFile(t, dir), "state.json"), 1)
		r := run(t, "run", "-config", writeFile(t, "agent.hcl", cfg))
		want := strings.ReplaceAll(fmt.Sprintf("Error: 2 problems on this host:\n"+
			"control.state_file: create directory: mkdir DIR/file: not a directory\n"+
			"gossip.bind: listen udp 127.0.0.1:%d: bind: address already in use\n", port), "DIR", dir)
		lines := strings.SplitAfter(r.stderr, "\n")
		if r.code != exitFailure || len(lines) < 4 || !matchStar(strings.Join(lines[len(lines)-4:], ""), want) {
			t.Errorf("code %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
		}
		if n := asked.Load(); n != 0 {
			t.Errorf("the instance metadata service was asked %d times before the refusal", n)
		}
		if _, err := os.Lstat(filepath.Join(dir, "agent.sock")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the refused run left its control socket: %v", err)
		}
	})
	t.Run("SocketReleasedWhenStartFails", func(t *testing.T) {
		dir := shortDir(t)
		imds, asked := imdsSpy(t)
		r := run(t, "run", "-config", writeFile(t, "agent.hcl", localConfig(dir, imds, freeGossipPort(t, ""))))
		if r.code != exitFailure || !strings.Contains(r.stderr, "Error: identify this instance: ") {
			t.Errorf("code %d, stderr %q; want 1 and the identity error", r.code, r.stderr)
		}
		if asked.Load() == 0 {
			t.Errorf("the instance metadata service was never asked")
		}
		if _, err := os.Lstat(filepath.Join(dir, "agent.sock")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the failed run left its control socket: %v", err)
		}
		ln, err := control.Listen(filepath.Join(dir, "agent.sock"))
		if err != nil {
			t.Fatalf("claim after the failed run: %v", err)
		}
		ln.Close()
	})
}
