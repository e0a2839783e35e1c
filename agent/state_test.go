package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
)

func TestState_RoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	st, err := loadState(path, "i-a")
	if err != nil || len(st.Displaced) != 0 {
		t.Fatalf("missing file: %+v, %v", st, err)
	}
	st.Displaced["egress"] = "i-b"
	if err := saveState(path, st); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(path, "i-a")
	if err != nil || got.Displaced["egress"] != "i-b" {
		t.Fatalf("after save: %+v, %v", got, err)
	}
	if _, err := loadState(path, "i-other"); err == nil || !strings.Contains(err.Error(), "written by i-a") {
		t.Fatalf("state of another instance: %v", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(path, "i-a"); err == nil {
		t.Fatal("corrupt state file read without error")
	}
}

// TestCluster_RestartInsidePartition: nat1 lost the group to nat2 across a partition and is
// restarted while it still cannot see nat2. With the state file it keeps its hands off; a
// node with no such memory of nat2 takes the group once it has confirmed nat2 is unreachable.
func TestCluster_RestartInsidePartition(t *testing.T) {
	c := newCluster(t, 200, 100)
	nat2 := c.world.Instances[1].ID
	// EC2 as nat2 left it: EIP and routes on nat2. nat2's agent is not running, so nat1
	// cannot see it, while EC2 reports the instance running.
	ctx := context.Background()
	if _, err := c.api.AssociateAddress(ctx, &awsec2.AssociateAddressInput{AllocationId: aws.String(c.world.AllocationID),
		InstanceId: aws.String(nat2), AllowReassociation: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(c.dir, "state-0.json")
	if err := saveState(state, persisted{Version: stateVersion, Node: c.world.Instances[0].ID,
		Displaced: map[string]string{"egress": nat2}}); err != nil {
		t.Fatal(err)
	}
	a := c.start(0)
	// Startup grace (2 rejoin intervals) plus a few reconcile rounds.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if eip, _ := c.owners(); eip != nat2 {
			t.Fatalf("restarted nat1 took the group back from %s across the partition", nat2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !c.logged("before the restart a peer this node could not see took the group") {
		t.Fatal("nat1 did not say why it keeps its hands off")
	}
	st, err := a.Status(ctx)
	if err != nil || st.Groups[0].EC2Owner != nat2 {
		t.Fatalf("status: %+v, %v", st, err)
	}

	// Without that memory (state file gone), nat1 probes nat2, gets no answer, and takes it.
	c.kill(0)
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	c.start(0)
	c.waitOwner(0, 10*time.Second)
}
