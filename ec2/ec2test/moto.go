// Package ec2test runs a moto server as a stand-in for EC2, seeds it with a VPC, instances,
// route tables and an Elastic IP through the real SDK, and puts an HTTP proxy in front of it
// that adds latency, EC2-style throttling, injected errors, connection resets, outages, hung
// calls and stale reads. The same proxy in front of the metadata mock makes it slow or
// unreachable.
package ec2test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MotoBinary is the moto server executable looked up on PATH.
const MotoBinary = "moto_server"

// Moto is a running moto server.
type Moto struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:40123.
	Endpoint string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// StartMoto starts a moto server on a free loopback port for the duration of the test and sets
// test credentials in the environment. It skips the test when moto_server is not installed.
func StartMoto(t testing.TB) *Moto {
	t.Helper()
	if _, err := exec.LookPath(MotoBinary); err != nil {
		t.Skipf("%s not on PATH (pip install 'moto[server]'): %v", MotoBinary, err)
	}
	TestCredentials(t)
	logf, err := os.CreateTemp(t.TempDir(), "moto-*.log")
	if err != nil {
		t.Fatalf("create moto log: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := StartMotoProcess(ctx, 0, logf)
	if err != nil {
		t.Fatalf("start moto: %v\n%s", err, tail(logf.Name()))
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("stop moto: %v", err)
		}
		if t.Failed() {
			t.Logf("moto log:\n%s", tail(logf.Name()))
		}
		logf.Close()
	})
	return m
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// StartMotoProcess starts `moto_server -H 127.0.0.1 -p port` (a free port when port is 0),
// writes its output to logw (discarded when nil) and returns once it answers HTTP. The caller
// stops it with Stop.
func StartMotoProcess(ctx context.Context, port int, logw io.Writer) (*Moto, error) {
	bin, err := exec.LookPath(MotoBinary)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", MotoBinary, err)
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if logw == nil {
		logw = io.Discard
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", MotoBinary, err)
	}
	m := &Moto{
		Endpoint: "http://127.0.0.1:" + strconv.Itoa(port),
		cmd:      cmd,
		done:     make(chan struct{}),
	}
	go func() {
		m.waitErr = cmd.Wait()
		close(m.done)
	}()
	if err := m.waitReady(ctx); err != nil {
		_ = m.Stop()
		return nil, err
	}
	return m, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls the server until it answers any HTTP request.
func (m *Moto) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.Endpoint+"/moto-api/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-m.done:
			return fmt.Errorf("moto exited before it was ready: %v", m.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("wait for moto at %s: %w (last error: %v)", m.Endpoint, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Stop terminates the server and its process group and waits for it to exit. It is idempotent.
func (m *Moto) Stop() error {
	m.stopOnce.Do(func() {
		stopGroup(m.cmd.Process.Pid, m.done)
		var exitErr *exec.ExitError
		if m.waitErr != nil && !errors.As(m.waitErr, &exitErr) {
			m.stopErr = fmt.Errorf("wait for moto: %w", m.waitErr)
		}
	})
	return m.stopErr
}

// Reset clears every resource in the server (POST /moto-api/reset).
func (m *Moto) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.Endpoint+"/moto-api/reset", bytes.NewReader(nil))
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("reset moto: http status %s", resp.Status)
	}
	return nil
}

// Test credentials and region used with moto, which accepts any key.
const (
	TestAccessKey = "testing"
	TestSecretKey = "testing"
	DefaultRegion = "us-east-1"
)

// SetTestCredentials sets dummy AWS credentials in the process environment, and AWS_REGION
// when it is unset, so the SDK's default chain never reaches for real ones.
func SetTestCredentials() {
	for k, v := range testEnv() {
		if k == "AWS_REGION" && os.Getenv(k) != "" {
			continue
		}
		if v == "" {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, v)
		}
	}
}

// TestCredentials is SetTestCredentials for one test: the environment is restored after it.
func TestCredentials(t testing.TB) {
	t.Helper()
	for k, v := range testEnv() {
		if k == "AWS_REGION" && os.Getenv(k) != "" {
			continue
		}
		t.Setenv(k, v) // registers the restore
		if v == "" {
			os.Unsetenv(k)
		}
	}
}

// testEnv is the environment for tests; "" means unset (botocore inside moto rejects an empty
// AWS_PROFILE).
func testEnv() map[string]string {
	return map[string]string{
		"AWS_ACCESS_KEY_ID":           TestAccessKey,
		"AWS_SECRET_ACCESS_KEY":       TestSecretKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_REGION":                  DefaultRegion,
	}
}

// stopGroup ends the process group led by pid: SIGTERM, then SIGKILL if it has not exited
// (done closed) within 5 s. It returns once done is closed.
func stopGroup(pid int, done <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
}
