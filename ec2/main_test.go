package ec2

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/go-hclog"

	"github.com/natganker/natganker/ec2/ec2test"
)

// One moto server is shared by the tests of this package; every test seeds its own VPC.
var (
	motoOnce sync.Once
	motoSrv  *ec2test.Moto
	motoErr  error
)

func TestMain(m *testing.M) {
	ec2test.SetTestCredentials()
	code := m.Run()
	if motoSrv != nil {
		if err := motoSrv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop moto:", err)
		}
	}
	os.Exit(code)
}

// sharedMoto returns the package's moto server, starting it on first use; it skips the test when
// moto_server is not installed.
func sharedMoto(t testing.TB) *ec2test.Moto {
	t.Helper()
	if _, err := exec.LookPath(ec2test.MotoBinary); err != nil {
		t.Skipf("%s not on PATH (pip install 'moto[server]'): %v", ec2test.MotoBinary, err)
	}
	motoOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		motoSrv, motoErr = ec2test.StartMotoProcess(ctx, 0, nil)
	})
	if motoErr != nil {
		t.Fatalf("start moto: %v", motoErr)
	}
	return motoSrv
}

// fixture is a seeded VPC with a client reaching moto through a counting proxy.
type fixture struct {
	world  ec2test.World
	proxy  *ec2test.Proxy
	client *Client
	raw    *ec2sdk.Client // straight to moto, for independent checks
	moto   *ec2test.Moto
}

// standardSpec is two instances, the Elastic IP on A, three route tables of which the first two
// route 0.0.0.0/0 via A and the third has no default route, all tagged natganker=g1, and a
// fourth, untagged table routing via A.
func standardSpec() ec2test.WorldSpec {
	return ec2test.WorldSpec{
		VPCCIDR:    "10.0.0.0/16",
		SubnetCIDR: "10.0.0.0/24",
		Instances:  []ec2test.InstanceSpec{{Name: "nat-a", PrivateIP: "10.0.0.10"}, {Name: "nat-b", PrivateIP: "10.0.0.11"}},
		RouteTables: []ec2test.RouteTableSpec{
			{Name: "private-a", DefaultTo: 0, Tags: map[string]string{"natganker": "g1"}, SubnetCIDR: "10.0.1.0/24"},
			{Name: "private-b", DefaultTo: 0, Tags: map[string]string{"natganker": "g1"}, SubnetCIDR: "10.0.2.0/24"},
			{Name: "private-c", DefaultTo: -1, Tags: map[string]string{"natganker": "g1"}},
			{Name: "other", DefaultTo: 0, Tags: map[string]string{"natganker": "g2"}},
		},
		EIPOwner: 0,
	}
}

func newFixture(t testing.TB, spec ec2test.WorldSpec, po ec2test.ProxyOptions, o Options) *fixture {
	t.Helper()
	m := sharedMoto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := ec2test.Seed(ctx, m.Endpoint, spec)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	p := ec2test.NewProxy(m.Endpoint, po)
	ep, err := p.Start()
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	o.Endpoint = ep
	o.Region = w.Region
	if o.Logger == nil {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t}})
	}
	c, err := New(ctx, o)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return &fixture{world: w, proxy: p, client: c, raw: ec2test.API(m.Endpoint, w.Region), moto: m}
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (f *fixture) inst(i int) string { return f.world.Instances[i].ID }

// rawDefaultRoutes reads the 0.0.0.0/0 target of every table straight from moto:
// table id → instance id or interface id ("" when missing).
func (f *fixture) rawRoutes(t testing.TB, dest string, ids ...string) map[string]string {
	t.Helper()
	out, err := f.raw.DescribeRouteTables(context.Background(), &ec2sdk.DescribeRouteTablesInput{RouteTableIds: ids})
	if err != nil {
		t.Fatalf("describe route tables: %v", err)
	}
	got := map[string]string{}
	for _, rt := range out.RouteTables {
		id := aws.ToString(rt.RouteTableId)
		got[id] = ""
		for _, r := range rt.Routes {
			if aws.ToString(r.DestinationCidrBlock) == dest {
				got[id] = aws.ToString(r.InstanceId) + aws.ToString(r.NetworkInterfaceId)
			}
		}
	}
	return got
}

// rawEIP returns the instance and interface the Elastic IP is associated with, straight from moto.
func (f *fixture) rawEIP(t testing.TB) (instanceID, eni string) {
	t.Helper()
	out, err := f.raw.DescribeAddresses(context.Background(), &ec2sdk.DescribeAddressesInput{AllocationIds: []string{f.world.AllocationID}})
	if err != nil {
		t.Fatalf("describe addresses: %v", err)
	}
	if len(out.Addresses) != 1 {
		t.Fatalf("describe addresses: got %d addresses", len(out.Addresses))
	}
	return aws.ToString(out.Addresses[0].InstanceId), aws.ToString(out.Addresses[0].NetworkInterfaceId)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
