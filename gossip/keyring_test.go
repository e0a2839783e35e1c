package gossip

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestGossip_KeyRotation rotates the key of a running three-node cluster the documented way,
// each step on every node in turn: install the new key, use it, remove the old one. No node
// ever sees another leave or die, and at the end a node with only the old key cannot join.
func TestGossip_KeyRotation(t *testing.T) {
	newKey := []byte("fedcba9876543210fedcba9876543210")
	ports := []int{freePort(t), freePort(t), freePort(t)}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	var nodes []*Gossip
	for i, name := range []string{"i-a", "i-b", "i-c"} {
		var peers []string
		for j := range ports {
			if j != i {
				peers = append(peers, addr(j))
			}
		}
		nodes = append(nodes, start(t, testConfig(t, name, ports[i], peers...)))
	}
	allAlive := func() bool {
		for _, g := range nodes {
			alive := 0
			for _, m := range g.Members() {
				if m.State == StateAlive {
					alive++
				}
			}
			if alive != len(nodes) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(10 * time.Second); !allAlive(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cluster did not form")
		}
	}
	// Any departure, however short, moves a member's Gone time: remember them all.
	gone := map[string]time.Time{}
	for _, g := range nodes {
		for _, m := range g.Members() {
			gone[g.LocalName()+"/"+m.Name] = m.Gone
		}
	}
	steady := func(step string) {
		t.Helper()
		// Gossip with the keys of this step for a while: a node that could not read another
		// would suspect it within a few probe intervals (200 ms each).
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			for _, g := range nodes {
				for _, m := range g.Members() {
					if m.State != StateAlive || !m.Gone.Equal(gone[g.LocalName()+"/"+m.Name]) {
						t.Fatalf("after %s, %s sees %s %s", step, g.LocalName(), m.Name, m.State)
					}
				}
				if u := g.Unreadable(); len(u) != 0 {
					t.Fatalf("after %s, %s cannot read %+v", step, g.LocalName(), u)
				}
			}
		}
	}

	for _, g := range nodes {
		if err := g.InstallKey(newKey); err != nil {
			t.Fatal(err)
		}
		steady("installing the new key on " + g.LocalName())
	}
	if err := nodes[0].RemoveKey(testKey); err == nil || !strings.Contains(err.Error(), "sends with that key") {
		t.Errorf("removing the key in use: %v", err)
	}
	for _, g := range nodes {
		if err := g.UseKey(newKey); err != nil {
			t.Fatal(err)
		}
		steady("using the new key on " + g.LocalName())
	}
	for _, g := range nodes {
		if err := g.RemoveKey(testKey); err != nil {
			t.Fatal(err)
		}
		steady("removing the old key on " + g.LocalName())
		primary, others, err := g.Keys()
		if err != nil || !bytes.Equal(primary, newKey) || len(others) != 0 {
			t.Fatalf("%s's keys after the rotation: %x + %x (%v)", g.LocalName(), primary, others, err)
		}
	}
	if err := nodes[0].RemoveKey(testKey); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("removing a key no longer there: %v", err)
	}

	// A node that missed the rotation is another key now.
	start(t, testConfig(t, "i-d", freePort(t), addr(0)))
	waitUnreadable(t, nodes[0], "127.0.0.1")
	if s := stateOf(nodes[0], "i-d"); s != "" {
		t.Errorf("a node with the old key joined: %s", s)
	}
}

// TestGossip_KeyringPlaintext: a node without encryption has no keyring to change.
func TestGossip_KeyringPlaintext(t *testing.T) {
	cfg := testConfig(t, "i-a", freePort(t))
	cfg.EncryptKey = nil
	g := start(t, cfg)
	if _, _, err := g.Keys(); err != ErrNoKeyring {
		t.Errorf("Keys: %v", err)
	}
	if err := g.InstallKey(testKey); err != ErrNoKeyring {
		t.Errorf("InstallKey: %v", err)
	}
}
