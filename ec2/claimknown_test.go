package ec2

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/natganker/natganker/ec2/ec2test"
)

func TestClient_ClaimKnown(t *testing.T) {
	f := newFixture(t, standardSpec(), ec2test.ProxyOptions{}, Options{})
	ctx := ctxT(t)
	a, b := f.inst(0), f.inst(1)
	rts := f.world.RouteTableIDs[:3]
	g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableIDs: rts}

	// What a peer read a while ago: EIP and two routes on a, the third table without a route.
	known, err := f.client.Observe(ctx, g, Self{InstanceID: b})
	if err != nil {
		t.Fatal(err)
	}
	// Since then someone deleted the route in the first table by hand.
	if _, err := f.raw.DeleteRoute(ctx, &ec2sdk.DeleteRouteInput{RouteTableId: aws.String(rts[0]), DestinationCidrBlock: aws.String("0.0.0.0/0")}); err != nil {
		t.Fatal(err)
	}

	f.proxy.ResetStats()
	rep, err := f.client.ClaimKnown(ctx, g, Self{InstanceID: b}, known)
	if err != nil {
		t.Fatalf("claim known: %v", err)
	}
	if rep.EIP.Action != ActionAssociated {
		t.Errorf("eip action = %q", rep.EIP.Action)
	}
	want := map[string]string{rts[0]: ActionCreated, rts[1]: ActionReplaced, rts[2]: ActionCreated}
	if got := routeActions(rep); !mapsEqual(got, want) {
		t.Errorf("route actions = %v, want %v", got, want)
	}
	// Nothing was read before acting: the only describes are the verification's.
	stats := f.proxy.Stats()
	if stats["DescribeAddresses"] != 1 || stats["DescribeRouteTables"] != 1 {
		t.Errorf("describe calls = %v, want only one read-back of each", stats)
	}
	after, err := f.client.Observe(ctx, g, Self{InstanceID: a})
	if err != nil {
		t.Fatal(err)
	}
	if after.EIP.InstanceID != b {
		t.Errorf("eip on %q after claim, want %s", after.EIP.InstanceID, b)
	}
	for _, r := range after.Routes {
		if r.InstanceID != b || r.State != RouteActive {
			t.Errorf("route %s %s → %q (%s), want %s", r.RouteTableID, r.Destination, r.InstanceID, r.State, b)
		}
	}

	// Claiming again from the fresh state changes nothing and calls nothing.
	f.proxy.ResetStats()
	rep, err = f.client.ClaimKnown(ctx, g, Self{InstanceID: b}, after)
	if err != nil || rep.Changed() {
		t.Fatalf("second claim: changed=%v err=%v", rep.Changed(), err)
	}
	if n := ec2test.Mutations(f.proxy.Stats()); n != 0 {
		t.Errorf("second claim made %d mutating calls", n)
	}
}
