package agent

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// forgeDead sends one memberlist "dead" message about victim to the agent at to, as an
// attacker on the network (or a replay of an old packet) would. memberlist's message type 5
// is dead; the body is the msgpack of {Incarnation, Node, From}.
func forgeDead(t *testing.T, to, victim string) {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte(5)
	msg := struct {
		Incarnation uint32
		Node        string
		From        string
	}{Incarnation: 1 << 20, Node: victim, From: "i-forger"}
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(&msg); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// TestCluster_ForgedDeath checks invariant 3: a forged "dead" message moves nothing.
func TestCluster_ForgedDeath(t *testing.T) {
	t.Run("PlaintextConfirmationSavesOwner", func(t *testing.T) {
		// Without a key memberlist believes the forgery at once; only the agent's own direct
		// probes stand between it and a takeover.
		c := newCluster(t, 200, 100)
		c.plaintext = true
		c.up()
		c.waitOwner(0, 10*time.Second)
		victim := c.world.Instances[0].ID
		forgeDead(t, fmt.Sprintf("%s:%d", c.addr(1), c.port), victim)
		deadline := time.Now().Add(5 * time.Second)
		for !c.logged("answers direct probes") {
			if time.Now().After(deadline) {
				t.Fatal("nat2 never probed nat1 after the forged death: did the forgery reach memberlist?")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !c.logged("peer gone: peer=" + victim) {
			t.Fatal("nat2's gossip never reported nat1 gone: the forgery did not take")
		}
		c.stays(0, 3*time.Second)
	})

	t.Run("EncryptedDropsForgery", func(t *testing.T) {
		c := newCluster(t, 200, 100)
		c.up()
		c.waitOwner(0, 10*time.Second)
		victim := c.world.Instances[0].ID
		forgeDead(t, fmt.Sprintf("%s:%d", c.addr(1), c.port), victim)
		c.stays(0, 3*time.Second)
		if c.logged("peer gone: peer=" + victim) {
			t.Fatal("an unencrypted forgery made nat2 think nat1 was gone")
		}
	})
}
