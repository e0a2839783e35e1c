package ec2test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MetadataMockBinary is the amazon-ec2-metadata-mock executable looked up on PATH.
const MetadataMockBinary = "ec2-metadata-mock"

// IMDSValues are what the metadata mock answers.
type IMDSValues struct {
	InstanceID, Region, AvailabilityZone, LocalIPv4, MAC, VPCCIDR string
	// Notices is the mock's subcommand and its flags, e.g. {"spot", "-d", "5"}: a spot
	// interruption notice 5 s after start. Nil serves no notice of the instance's end.
	Notices []string
}

// QuietIMDS are the mock's arguments for serving no notice of the instance's end: run
// without a subcommand it would serve a spot interruption, a scheduled reboot and the Auto
// Scaling state Terminated at once. The spot mode with both of its notices eleven days away
// serves none of them.
var QuietIMDS = []string{"spot", "-d", "1000000", "--rebalance-delay-sec", "1000000"}

// IMDS is a running ec2-metadata-mock serving IMDSv2 only.
type IMDS struct {
	// Endpoint is the mock's base URL, e.g. http://127.0.0.1:1338.
	Endpoint string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// StartIMDS starts a metadata mock on a free loopback port for the duration of the test. It
// skips the test when ec2-metadata-mock is not installed.
func StartIMDS(t testing.TB, v IMDSValues) *IMDS {
	t.Helper()
	if _, err := exec.LookPath(MetadataMockBinary); err != nil {
		t.Skipf("%s not on PATH (go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0): %v", MetadataMockBinary, err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logf, err := os.Create(filepath.Join(dir, "imds.log"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := StartIMDSProcess(ctx, "127.0.0.1", 0, v, dir, logf)
	if err != nil {
		t.Fatalf("start metadata mock: %v\n%s", err, tail(logf.Name()))
	}
	t.Cleanup(func() {
		m.Stop()
		logf.Close()
	})
	return m
}

// StartIMDSProcess starts `ec2-metadata-mock -I -n host -p port -c <dir>/aemm-config.json MODE`
// (MODE is v.Notices, or QuietIMDS)
// (a free port when port is 0; HOME is dir so the mock writes nothing elsewhere) and returns
// once it hands out IMDSv2 tokens. Its output goes to logw.
func StartIMDSProcess(ctx context.Context, host string, port int, v IMDSValues, dir string, logw io.Writer) (*IMDS, error) {
	bin, err := exec.LookPath(MetadataMockBinary)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", MetadataMockBinary, err)
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(dir, "aemm-config.json")
	if err := os.WriteFile(cfgPath, IMDSConfig(v), 0o600); err != nil {
		return nil, fmt.Errorf("write metadata mock config: %w", err)
	}
	if logw == nil {
		logw = io.Discard
	}
	mode := v.Notices
	if mode == nil {
		mode = QuietIMDS
	}
	cmd := exec.Command(bin, append([]string{"-I", "-n", host, "-p", strconv.Itoa(port), "-c", cfgPath}, mode...)...)
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", MetadataMockBinary, err)
	}
	m := &IMDS{Endpoint: "http://" + host + ":" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		close(m.done)
	}()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, m.Endpoint+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("metadata mock exited before it was ready: %v", m.waitErr)
		case <-ctx.Done():
			m.Stop()
			return nil, fmt.Errorf("wait for metadata mock at %s: %w", m.Endpoint, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop terminates the mock and waits for it to exit. It is idempotent.
func (m *IMDS) Stop() {
	m.stopOnce.Do(func() { stopGroup(m.cmd.Process.Pid, m.done) })
}

// IMDSConfig renders the mock's JSON config: the metadata values and the instance identity
// document (which the SDK's GetRegion reads), so both agree.
func IMDSConfig(v IMDSValues) []byte {
	values := map[string]string{}
	set := func(k, val string) {
		if val != "" {
			values[k] = val
		}
	}
	set("instance-id", v.InstanceID)
	set("placement-region", v.Region)
	set("placement-availability-zone", v.AvailabilityZone)
	set("local-ipv4", v.LocalIPv4)
	set("mac", v.MAC)
	set("mac-vpc-ipv4-cidr-block", v.VPCCIDR)
	doc := map[string]string{}
	for k, val := range map[string]string{"instanceId": v.InstanceID, "region": v.Region, "availabilityZone": v.AvailabilityZone, "privateIp": v.LocalIPv4} {
		if val != "" {
			doc[k] = val
		}
	}
	b, _ := json.MarshalIndent(map[string]any{
		"metadata": map[string]any{"values": values},
		"dynamic":  map[string]any{"values": map[string]any{"instance-identity-document": doc}},
	}, "", "  ")
	return b
}

// StartIMDSProxy starts a Proxy in front of the metadata mock m for the duration of the test
// and returns it with its endpoint. Point LoadIdentity (or the SDK's imds client) at the
// endpoint, then make the metadata service slow (SetLatency), unreachable at once
// (StartOutage, OutageFor), hung (Hang) or flaky (ResetNext, ResetRate). Its Stats count calls
// by "METHOD /path", e.g. "PUT /latest/api/token".
func StartIMDSProxy(t testing.TB, m *IMDS, o ProxyOptions) (*Proxy, string) {
	t.Helper()
	p := NewProxy(m.Endpoint, o)
	ep, err := p.Start()
	if err != nil {
		t.Fatalf("start metadata proxy: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close metadata proxy: %v", err)
		}
	})
	return p, ep
}
