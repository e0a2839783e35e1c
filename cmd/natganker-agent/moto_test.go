package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
	"github.com/natganker/natganker/ec2/ec2test"
)

// syncBuffer is a bytes.Buffer safe for the agent's logger and the test to share.
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

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// motoConfig is a configuration whose identity is fully given, so that no instance metadata
// service is asked, and whose EC2 is the moto server. Gossip binds port and joins the agents
// on peerPorts, or only itself when none is given.
func motoConfig(w ec2test.World, endpoint string, port int, socket, routeTable string, peerPorts ...int) string {
	if len(peerPorts) == 0 {
		peerPorts = []int{port}
	}
	var peers []string
	for _, p := range peerPorts {
		peers = append(peers, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", p)))
	}
	return fmt.Sprintf(`
node {
  instance_id       = %q
  region            = %q
  availability_zone = "us-east-1a"
  local_ipv4        = "127.0.0.1"
  mac               = "0e:00:00:00:00:11"
  vpc_cidr          = "10.0.0.0/16"
  # Every field is given, and the notice poll goes to a closed loopback port: the test
  # never reaches the machine's own metadata service.
  imds_endpoint     = "http://127.0.0.1:1"
}
gossip {
  bind               = "127.0.0.1:%d"
  peers              = [%s]
  insecure_plaintext = true
}
group "egress" {
  priority              = 200
  elastic_ip            = %q
  route_tables          = [%q]
  discover_route_tables = false
}
ec2 {
  endpoint = %q
}
control {
  socket     = %q
  state_file = %q
}
log {
  level = "debug"
}
`, w.Instances[0].ID, w.Region, port, strings.Join(peers, ", "), w.AllocationID, routeTable, endpoint, socket, filepath.Join(filepath.Dir(socket), "state.json"))
}

// TestWithMoto runs validate -remote and a whole agent against a moto server standing in for EC2.
func TestWithMoto(t *testing.T) {
	moto := ec2test.StartMoto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	world, err := ec2test.Seed(ctx, moto.Endpoint, ec2test.WorldSpec{
		Instances:   []ec2test.InstanceSpec{{Name: "nat-a"}, {Name: "nat-b"}},
		RouteTables: []ec2test.RouteTableSpec{{Name: "private-a", DefaultTo: -1}},
		EIPOwner:    -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	self, rtb := world.Instances[0].ID, world.RouteTableIDs[0]
	dir, err := os.MkdirTemp("", "ngrun")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")

	t.Run("ValidateRemote", func(t *testing.T) {
		cfg := writeFile(t, "agent.hcl", motoConfig(world, moto.Endpoint, freePort(t), sock, rtb))
		r := run(t, "validate", "-remote", "-config", cfg)
		want := []string{
			"config OK: 1 group (egress priority 200)",
			"instance " + self + " in us-east-1",
			"group egress\n",
			"  elastic IP " + world.AllocationID + " " + world.PublicIP + " -> (nothing)\n",
			"  route " + rtb + " 0.0.0.0/0 -> (nothing) missing\n",
			// moto carries out route dry runs: nothing is checked, nothing moves.
			"  permissions: not checked: the EC2 endpoint does not answer dry runs\n",
		}
		if r.code != 0 {
			t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("stdout %q lacks %q", r.stdout, w)
			}
		}
	})
	t.Run("ValidateRemoteFindsProblems", func(t *testing.T) {
		cfg := writeFile(t, "agent.hcl", motoConfig(world, moto.Endpoint, freePort(t), sock, "rtb-0000dead"))
		r := run(t, "validate", "-remote", "-config", cfg)
		if r.code != exitFailure || !strings.Contains(r.stdout, "  problem: ") || !strings.Contains(r.stdout, "rtb-0000dead") ||
			r.stderr != "Error: remote check failed for egress\n" {
			t.Errorf("code %d, stdout %q, stderr %q; want 1 and the problem", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("ValidateRemoteTwoGroupsOneAddress", func(t *testing.T) {
		// A second group needs a second private address on this instance, which has one.
		two := strings.Replace(motoConfig(world, moto.Endpoint, freePort(t), sock, rtb), `group "egress" {`, `group "az-b" {
  priority              = 100
  elastic_ip            = "203.0.113.9"
  route_tables          = ["rtb-0000beef"]
  discover_route_tables = false
}
group "egress" {`, 1)
		r := run(t, "validate", "-remote", "-config", writeFile(t, "agent.hcl", two))
		want := fmt.Sprintf(`  problem: this instance cannot hold group "egress"'s Elastic IP beside group "az-b"'s: interface %s has 1 private address; assign it a secondary private IP`,
			world.Instances[0].ENIID)
		if r.code != exitFailure || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "elastic IP goes on "+world.Instances[0].PrivateIP+" here") {
			t.Errorf("code %d, stdout %q, stderr %q; want 1 and %q", r.code, r.stdout, r.stderr, want)
		}
	})

	t.Run("ValidateRemotePermissions", func(t *testing.T) {
		// Through the proxy, which answers dry runs as EC2 does.
		p := ec2test.NewProxy(moto.Endpoint, ec2test.ProxyOptions{})
		ep, err := p.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		cfg := writeFile(t, "agent.hcl", motoConfig(world, ep, freePort(t), sock, rtb))
		r := run(t, "validate", "-remote", "-config", cfg)
		if r.code != 0 || !strings.Contains(r.stdout, "  permissions: a takeover's 3 calls allowed (dry run)\n") {
			t.Fatalf("allowed: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		p.Deny("ReplaceRoute")
		r = run(t, "validate", "-remote", "-config", cfg)
		if r.code != exitFailure || !strings.Contains(r.stdout, "  permission denied: ec2:ReplaceRoute on "+rtb+"\n") ||
			r.stderr != "Error: remote check failed for egress\n" {
			t.Fatalf("denied: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("RunTakeoverStop", func(t *testing.T) {
		cfg := writeFile(t, "agent.hcl", motoConfig(world, moto.Endpoint, freePort(t), sock, rtb))
		ra := startRun(t, cfg)
		client := control.NewClient(sock)
		waitFor(t, 20*time.Second, "the control socket to answer", func() bool {
			_, err := client.Members(context.Background())
			return err == nil
		})
		if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket: %v, mode %v; want 0600", err, fi.Mode().Perm())
		}

		r := run(t, "members", "-socket", sock)
		if r.code != 0 || !strings.Contains(r.stdout, self+" *") || !strings.Contains(r.stdout, "egress") {
			t.Errorf("members: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}

		// An agent takes over only from what it has read in EC2: wait for the first read.
		waitFor(t, 20*time.Second, "the agent to read EC2", func() bool {
			st, err := client.Status(context.Background())
			return err == nil && len(st.Groups) == 1 && !st.Groups[0].ObservedAt.IsZero()
		})
		r = run(t, "takeover", "-group", "egress", "-socket", sock)
		if r.code != 0 || r.stdout != "egress: this node owns the group\n" {
			t.Errorf("takeover: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		var st agent.StatusView
		waitFor(t, 10*time.Second, "status to show the takeover", func() bool {
			r = run(t, "status", "-json", "-socket", sock)
			st = agent.StatusView{}
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Groups) != 1 {
				return false
			}
			g := st.Groups[0]
			return g.EC2Owner == self && g.ElasticIP.InstanceID == self && len(g.Routes) == 1 &&
				g.Routes[0].Target == self && g.Routes[0].State == "active"
		})
		if st.Version != version || st.Groups[0].LastTakeover == nil {
			t.Errorf("status = %+v; want version %q and a last takeover", st, version)
		}
		r = run(t, "status", "-socket", sock)
		for _, w := range []string{"EC2 owner:     " + self, rtb + "  0.0.0.0/0  -> " + self + "  active", "Last takeover: "} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("status text %q lacks %q", r.stdout, w)
			}
		}

		r = run(t, "takeover", "-group", "nope", "-socket", sock)
		if r.code != exitFailure || !strings.HasPrefix(r.stderr, "Error: takeover: unknown group: nope") {
			t.Errorf("unknown group: code %d, stderr %q", r.code, r.stderr)
		}

		if err := ra.stop(t, 20*time.Second); err != nil {
			t.Errorf("run returned %v after SIGTERM", err)
		}
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("socket left behind: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(ra.logs.String()), "\n")
		var last map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
			t.Fatalf("last log line %q is not JSON: %v", lines[len(lines)-1], err)
		}
		if last["@message"] != "stopped" {
			t.Errorf("last log line = %v, want the message \"stopped\"", last)
		}
		r = run(t, "members", "-socket", sock)
		if r.code != exitFailure || !strings.Contains(r.stderr, "is natganker-agent running?") {
			t.Errorf("members after stop: code %d, stderr %q", r.code, r.stderr)
		}
	})

	// The metadata service is asked once, at start: an agent that learnt who it is keeps
	// running, answering and taking over when the service goes away.
	t.Run("MetadataGoneAfterStart", func(t *testing.T) {
		imds := ec2test.StartIMDS(t, ec2test.IMDSValues{InstanceID: self, Region: world.Region, AvailabilityZone: "us-east-1a",
			LocalIPv4: "127.0.0.1", MAC: "0e:00:00:00:00:11", VPCCIDR: "10.0.0.0/16"})
		dir, err := os.MkdirTemp("", "ngimds")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		sock := filepath.Join(dir, "agent.sock")
		cfg := writeFile(t, "agent.hcl", withIMDS(motoConfig(world, moto.Endpoint, freePort(t), sock, rtb), imds.Endpoint))
		ra := startRun(t, cfg)
		client := control.NewClient(sock)
		waitFor(t, 20*time.Second, "the agent to read EC2", func() bool {
			st, err := client.Status(context.Background())
			return err == nil && len(st.Groups) == 1 && !st.Groups[0].ObservedAt.IsZero()
		})
		if !strings.Contains(ra.logs.String(), `"vpc_cidr":"10.0.0.0/16"`) {
			t.Fatalf("the identity did not come from the metadata service:\n%s", ra.logs.String())
		}

		imds.Stop()
		if resp, err := http.Get(imds.Endpoint + "/latest/meta-data/instance-id"); err == nil {
			resp.Body.Close()
			t.Fatalf("the metadata service still answers after Stop")
		}
		// Someone moves the address and the route away behind the agent's back.
		api := ec2test.API(moto.Endpoint, world.Region)
		other := world.Instances[1].ID
		ctx := context.Background()
		if _, err := api.AssociateAddress(ctx, &awsec2.AssociateAddressInput{AllocationId: aws.String(world.AllocationID),
			InstanceId: aws.String(other), AllowReassociation: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.ReplaceRoute(ctx, &awsec2.ReplaceRouteInput{RouteTableId: aws.String(rtb),
			DestinationCidrBlock: aws.String("0.0.0.0/0"), InstanceId: aws.String(other)}); err != nil {
			t.Fatal(err)
		}

		r := run(t, "status", "-socket", sock)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Node "+self) {
			t.Errorf("status with the metadata service gone: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = run(t, "takeover", "-group", "egress", "-socket", sock)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "egress: ") {
			t.Errorf("takeover with the metadata service gone: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		waitFor(t, 10*time.Second, "EC2 to point the address and the route at this instance again", func() bool {
			ao, err := api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{AllocationIds: []string{world.AllocationID}})
			if err != nil || len(ao.Addresses) != 1 || aws.ToString(ao.Addresses[0].InstanceId) != self {
				return false
			}
			ro, err := api.DescribeRouteTables(ctx, &awsec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}})
			if err != nil || len(ro.RouteTables) != 1 {
				return false
			}
			for _, route := range ro.RouteTables[0].Routes {
				if aws.ToString(route.DestinationCidrBlock) == "0.0.0.0/0" {
					return aws.ToString(route.InstanceId) == self
				}
			}
			return false
		})
		if err := ra.stop(t, 20*time.Second); err != nil {
			t.Errorf("run returned %v after SIGTERM", err)
		}
		if strings.Contains(ra.logs.String(), `"@level":"error"`) {
			t.Errorf("the agent logged errors with the metadata service gone:\n%s", ra.logs.String())
		}
	})

	// Regression: a second run with the same control socket used to join gossip under the
	// running agent's name (the instance id) for about 0.6 s before it found the socket taken.
	t.Run("SecondRunRefusedBeforeJoining", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "ngtwo")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		sock := filepath.Join(dir, "agent.sock")
		// A socket left behind by an agent that died: the first run takes it over.
		stale, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		stale.(*net.UnixListener).SetUnlinkOnClose(false)
		stale.Close()

		firstPort, secondPort := freePort(t), freePort(t)
		first := startRun(t, writeFile(t, "first.hcl", motoConfig(world, moto.Endpoint, firstPort, sock, rtb)))
		waitFor(t, 20*time.Second, "the first agent's control socket to answer", func() bool {
			_, err := control.NewClient(sock).Members(context.Background())
			return err == nil
		})

		// Same instance, same socket, its own gossip port, and the first agent as its peer:
		// exactly what would join the first one's cluster under its name.
		second := writeFile(t, "second.hcl", motoConfig(world, moto.Endpoint, secondPort, sock, rtb, firstPort))
		r := run(t, "run", "-config", second)
		want := fmt.Sprintf("Error: control socket %s is served by a running agent (pid %d, instance %s): stop it first or set control.socket\n",
			sock, os.Getpid(), self)
		if r.code != exitFailure || !strings.HasSuffix(r.stderr, want) {
			t.Errorf("second run: code %d, stderr:\n%s\nwant exit 1 and %q", r.code, r.stderr, want)
		}
		// The second run never bound its gossip port: its log shows no gossip at all. Before
		// the fix it logged the agent "started" on that port, then memberlist's join.
		secondAddr := fmt.Sprintf("127.0.0.1:%d", secondPort)
		for _, line := range strings.Split(r.stderr, "\n") {
			if strings.Contains(line, secondAddr) || strings.Contains(line, "memberlist") || strings.Contains(line, "natganker.gossip") {
				t.Errorf("the refused run started gossip: %s", line)
			}
		}
		// The first agent serves on, and never saw a second node under its name.
		members, err := control.NewClient(sock).Members(context.Background())
		if err != nil || len(members) != 1 || !members[0].Self || members[0].Name != self {
			t.Errorf("first agent's members = %+v, %v; want itself alone", members, err)
		}
		if err := first.stop(t, 20*time.Second); err != nil {
			t.Errorf("first run returned %v after SIGTERM", err)
		}
		for _, line := range strings.Split(first.logs.String(), "\n") {
			if strings.Contains(line, "two nodes claim the same name") || strings.Contains(line, "Conflicting address") {
				t.Errorf("the first agent saw its name claimed twice: %s", line)
			}
		}
	})
}

// withIMDS replaces the node block of cfg, which gives the whole identity, with one that
// sends the agent to the metadata service at endpoint.
func withIMDS(cfg, endpoint string) string {
	start := strings.Index(cfg, "node {")
	end := start + strings.Index(cfg[start:], "}\n") + 2
	return cfg[:start] + fmt.Sprintf("node {\n  imds_endpoint = %q\n}\n", endpoint) + cfg[end:]
}

// runningAgent is a run command started in the background by startRun.
type runningAgent struct {
	logs *syncBuffer
	sigc chan os.Signal
	done chan struct{}
	err  error // what Run returned, once done is closed
}

// startRun starts "run -config cfg" in the background. The test's cleanup stops it if the
// test did not, and shows its log when the test failed.
func startRun(t *testing.T, cfg string) *runningAgent {
	t.Helper()
	ra := &runningAgent{logs: &syncBuffer{}, sigc: make(chan os.Signal, 2), done: make(chan struct{})}
	cmd := &RunCommand{stdout: &bytes.Buffer{}, stderr: ra.logs, signals: ra.sigc,
		exit: func(code int) { t.Errorf("exit(%d) called after a single signal", code) }}
	go func() {
		defer close(ra.done)
		ra.err = cmd.Run(context.Background(), []string{"-config", cfg})
	}()
	t.Cleanup(func() {
		select {
		case <-ra.done:
		default:
			ra.sigc <- syscall.SIGTERM
			<-ra.done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", ra.logs.String())
		}
	})
	return ra
}

// stop sends SIGTERM and returns what Run returned, failing the test if it takes longer than
// timeout.
func (ra *runningAgent) stop(t *testing.T, timeout time.Duration) error {
	t.Helper()
	ra.sigc <- syscall.SIGTERM
	select {
	case <-ra.done:
		return ra.err
	case <-time.After(timeout):
		t.Fatalf("run did not return %v after SIGTERM", timeout)
		return nil
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
