package ec2

import (
	"testing"

	"github.com/natganker/natganker/ec2/ec2test"
)

// TestClient_MultipleInterfaces: nat-b has a second interface in a private subnet, and the
// proxy refuses it as an instance target as EC2 does. A claim by nat-b puts the Elastic IP on
// its interface in the public subnet and the routes on its private interface; a read then
// shows nat-b owning everything, so a repair (a claim that reads first) moves nothing, and the
// dry-run permission check names the same interfaces.
func TestClient_MultipleInterfaces(t *testing.T) {
	spec := standardSpec()
	spec.Instances[1].SecondENI = true
	f := newFixture(t, spec, ec2test.ProxyOptions{}, Options{})
	b := f.world.Instances[1]
	if b.SecondENIID == "" {
		t.Fatal("the seed gave nat-b no second interface")
	}
	f.proxy.RefuseInstanceTarget(b.ID)
	g := Group{Name: "g1", ElasticIP: f.world.AllocationID, RouteTableTags: map[string]string{"natganker": "g1"}}
	self := Self{InstanceID: b.ID}

	obs, err := f.client.Observe(ctxT(t), g, self)
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.client.CheckPermissions(ctxT(t), g, self, obs)
	if err != nil || !p.Honoured || len(p.Denied())+len(p.Inconclusive()) != 0 {
		t.Fatalf("permissions of a multi-interface instance: %+v, %v", p, err)
	}
	r, err := f.client.Claim(ctxT(t), g, self, &obs)
	if err != nil || r.Err() != nil {
		t.Fatalf("claim: %v / %v", err, r.Err())
	}
	if inst, eni := f.rawEIP(t); eni != b.ENIID {
		t.Errorf("Elastic IP on %q (instance %q), want the public interface %s", eni, inst, b.ENIID)
	}
	for table, target := range f.rawRoutes(t, "0.0.0.0/0", f.world.RouteTableIDs[:3]...) {
		if target != b.SecondENIID {
			t.Errorf("route in %s to %q, want the private interface %s", table, target, b.SecondENIID)
		}
	}

	after, err := f.client.Observe(ctxT(t), g, self)
	if err != nil {
		t.Fatal(err)
	}
	if after.EIP.InstanceID != b.ID {
		t.Errorf("the Elastic IP reads as on %q, want %s", after.EIP.InstanceID, b.ID)
	}
	for _, rt := range after.Routes {
		if rt.InstanceID != b.ID {
			t.Errorf("route %s reads as on %q, want %s", rt.RouteTableID, rt.InstanceID, b.ID)
		}
	}
	before := f.proxy.Stats()
	if r, err := f.client.Claim(ctxT(t), g, self, nil); err != nil || r.Err() != nil {
		t.Fatalf("second claim: %v / %v", err, r.Err())
	}
	st := f.proxy.Stats()
	for _, a := range []string{"AssociateAddress", "ReplaceRoute", "CreateRoute"} {
		if st[a] != before[a] {
			t.Errorf("a claim of what nat-b owns called %s %d times", a, st[a]-before[a])
		}
	}
}
