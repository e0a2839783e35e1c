package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/ec2/ec2test"
)

// TestCluster_PermissionDenied: the backup's instance profile lacks ReplaceRoute (EC2, through
// the proxy, answers UnauthorizedOperation). The backup finds out by dry run before any
// takeover, says so in the log and in members, and when the owner dies the third agent, whose
// profile is complete, takes the group; the backup moves nothing. Once the permission is
// granted the backup is healthy again.
func TestCluster_PermissionDenied(t *testing.T) {
	was := permissionsRetry
	permissionsRetry = 500 * time.Millisecond
	t.Cleanup(func() { permissionsRetry = was })

	c := newCluster(t, 300, 200, 100)
	c.withProxies()
	c.proxies[1].Deny("ReplaceRoute")
	a := c.up()[0]
	c.waitOwner(0, 10*time.Second)
	backup := c.world.Instances[1].ID
	reasonOf := func() string {
		ms, err := a.Members(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Name == backup && !m.Healthy {
				return m.Reason
			}
		}
		return ""
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(reasonOf(), "cannot take over: EC2 denies ec2:ReplaceRoute on rtb-") {
		if time.Now().After(deadline) {
			t.Fatalf("members never showed the backup's missing permission; reason %q", reasonOf())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !c.logged("this node lacks EC2 permissions a takeover needs") {
		t.Error("the backup did not log its missing permission")
	}

	c.kill(0)
	c.waitOwner(2, 15*time.Second)
	st := c.proxies[1].Stats()
	if st["ReplaceRoute"]+st["CreateRoute"]+st["AssociateAddress"] != 0 {
		t.Errorf("the backup without ReplaceRoute tried to take over: %v", st)
	}
	if st[ec2test.DryRunPrefix+"ReplaceRoute"] == 0 {
		t.Errorf("the backup never dry-ran ReplaceRoute: %v", st)
	}

	// Granted: the backup checks again and is healthy.
	c.proxies[1].Deny()
	c3 := c.agents[2]
	deadline = time.Now().Add(15 * time.Second)
	for {
		ms, err := c3.Members(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, m := range ms {
			ok = ok || (m.Name == backup && m.Healthy)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backup is still unhealthy after the permission was granted: %+v", ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
