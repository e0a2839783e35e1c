package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/config"
)

func TestNewLogger(t *testing.T) {
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	cases := []struct {
		name     string
		log      config.Log
		json     bool
		debugOut bool
	}{
		{"JSON", config.Log{Level: "info", Format: "json"}, true, false},
		{"Text", config.Log{Level: "debug", Format: "text"}, false, true},
		{"AutoNotATerminal", config.Log{Level: "warn", Format: "auto"}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			l, err := newLogger(tc.log, &b)
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("debug line")
			l.Warn("hello", "k", "v")
			out := b.String()
			var rec map[string]any
			isJSON := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(out), "\n")[0]), &rec) == nil
			if isJSON != tc.json {
				t.Errorf("output %q: JSON = %v, want %v", out, isJSON, tc.json)
			}
			if got := strings.Contains(out, "debug line"); got != tc.debugOut {
				t.Errorf("output %q: debug shown = %v, want %v", out, got, tc.debugOut)
			}
			if !strings.Contains(out, "hello") {
				t.Errorf("output %q lacks the warning", out)
			}
		})
	}
	t.Run("DevNullIsNotATerminal", func(t *testing.T) {
		if isTerminal(devNull) {
			t.Errorf("/dev/null taken for a terminal")
		}
	})
	t.Run("BadLevel", func(t *testing.T) {
		if _, err := newLogger(config.Log{Level: "loud", Format: "auto"}, &bytes.Buffer{}); err == nil {
			t.Errorf("no error for level \"loud\"")
		}
	})
}

func TestRunCommand(t *testing.T) {
	t.Run("BadConfig", func(t *testing.T) {
		r := run(t, "run", "-config", writeFile(t, "agent.hcl", "group {"))
		if r.code != exitFailure || !strings.HasPrefix(r.stderr, "Error: invalid configuration:\n") {
			t.Errorf("code %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("SignalDuringStartUp", func(t *testing.T) {
		// A metadata service that never answers: only the signal can end the start-up early.
		imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}))
		defer imds.Close()
		cfg := localConfig(shortDir(t), imds.URL, freeGossipPort(t, ""))
		var logs syncBuffer
		sigc := make(chan os.Signal, 1)
		cmd := &RunCommand{stderr: &logs, signals: sigc, exit: func(int) { t.Error("exit called") }}
		done := make(chan error, 1)
		go func() { done <- cmd.Run(context.Background(), []string{"-config", writeFile(t, "agent.hcl", cfg)}) }()
		waitFor(t, 5*time.Second, "start-up to begin", func() bool { return strings.Contains(logs.String(), `"starting"`) })
		sigc <- syscall.SIGTERM
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v, want nil after a stop during start-up", err)
			}
		case <-time.After(500 * time.Millisecond):
			t.Fatalf("run still starting 500ms after SIGTERM; log:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "stopped before start-up completed") {
			t.Errorf("log lacks the early stop:\n%s", logs.String())
		}
	})
}

func TestShutdown(t *testing.T) {
	t.Run("InOrder", func(t *testing.T) {
		var order []string
		var logs bytes.Buffer
		logger := hclog.New(&hclog.LoggerOptions{Output: &logs})
		err := shutdown(logger, make(chan os.Signal), func(int) { t.Error("exit called") },
			step{"a", func() error { order = append(order, "a"); return nil }},
			step{"b", func() error { order = append(order, "b"); return errors.New("boom") }},
			step{"c", func() error { order = append(order, "c"); return nil }},
		)
		if strings.Join(order, "") != "abc" {
			t.Errorf("steps ran as %q, want abc", order)
		}
		if err == nil || err.Error() != "b: boom" {
			t.Errorf("err = %v, want \"b: boom\"", err)
		}
	})
	t.Run("SecondSignalExitsAtOnce", func(t *testing.T) {
		sigc := make(chan os.Signal, 1)
		release := make(chan struct{})
		exited := make(chan int, 1)
		exit := func(code int) { exited <- code; close(release) }
		var logs syncBuffer
		logger := hclog.New(&hclog.LoggerOptions{Output: &logs})
		done := make(chan error, 1)
		go func() {
			done <- shutdown(logger, sigc, exit, step{"handover", func() error { <-release; return nil }})
		}()
		sigc <- syscall.SIGINT
		select {
		case code := <-exited:
			if code != exitFailure {
				t.Errorf("exit(%d), want exit(1)", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a second signal did not exit")
		}
		if err := <-done; err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if !strings.Contains(logs.String(), "second signal received") {
			t.Errorf("log lacks the reason:\n%s", logs.String())
		}
	})
}
