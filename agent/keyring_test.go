package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natganker/natganker/config"
)

// TestCluster_KeyRotation rotates the gossip key of three running agents through their
// control API, each step on every agent before the next: install the new key, use it, remove
// the old one. No agent ever sees a peer other than alive, ownership never moves, every key
// file ends up holding the new key alone, and an agent restarted from its file rejoins.
func TestCluster_KeyRotation(t *testing.T) {
	c := newCluster(t, 300, 200, 100)
	c.keyFiles = true
	for i := range 3 {
		c.start(i)
	}
	for i := range 3 {
		c.waitMembers(c.agents[i], 3)
	}
	c.waitOwner(0, 10*time.Second)
	oldKey, _ := base64.StdEncoding.DecodeString(c.key)
	newKey := []byte("a-new-gossip-key-32-bytes-long!!")

	// Watch every agent's view of the others for the whole rotation.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lost []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for i, a := range c.agents {
				ms, err := a.Members(ctx)
				if err != nil {
					continue
				}
				for _, m := range ms {
					if m.State != "alive" {
						mu.Lock()
						lost = append(lost, c.world.Instances[i].ID+" saw "+m.Name+" "+m.State)
						mu.Unlock()
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	step := func(op string, req func(i int) KeyringRequest) {
		t.Helper()
		for i, a := range c.agents {
			v, err := a.Keyring(context.Background(), req(i))
			if err != nil {
				t.Fatalf("keyring %s on nat%d: %v", op, i+1, err)
			}
			if v.Saved != c.keyFile(i) {
				t.Fatalf("keyring %s on nat%d saved to %q, want %q", op, i+1, v.Saved, c.keyFile(i))
			}
			// Let the cluster gossip with this agent's new keyring before the next one.
			c.stays(0, 500*time.Millisecond)
		}
	}
	step("install", func(int) KeyringRequest { return KeyringRequest{Op: KeyringInstall, Key: newKey} })
	step("use", func(int) KeyringRequest { return KeyringRequest{Op: KeyringUse, Key: newKey} })
	step("remove", func(int) KeyringRequest {
		return KeyringRequest{Op: KeyringRemove, Fingerprint: KeyFingerprint(oldKey)}
	})
	c.stays(0, 2*time.Second)
	stop()
	wg.Wait()
	if len(lost) > 0 {
		t.Fatalf("members lost during the rotation: %s", strings.Join(lost[:min(len(lost), 10)], "; "))
	}
	for i, a := range c.agents {
		st, err := a.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if lt := st.Groups[0].LastTakeover; lt != nil && i != 0 {
			t.Errorf("nat%d took over during the rotation: %+v", i+1, lt)
		}
		cfg, err := config.Load(filepathOf(c, i))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cfg.Gossip.EncryptKey, newKey) || len(cfg.Gossip.OtherKeys) != 0 {
			t.Errorf("nat%d's key file holds %s + %d others, want the new key alone", i+1, KeyFingerprint(cfg.Gossip.EncryptKey), len(cfg.Gossip.OtherKeys))
		}
	}
	if c.logged("cannot decrypt gossip") {
		t.Error("an agent could not decrypt gossip during the rotation")
	}

	// The old key is refused now, and a restart reads the new one from the file.
	if _, err := c.agents[0].Keyring(context.Background(), KeyringRequest{Op: KeyringUse, Key: oldKey}); err == nil ||
		!strings.Contains(err.Error(), "not installed") {
		t.Errorf("use of the removed key: %v", err)
	}
	c.kill(2)
	c.start(2)
	c.waitMembers(c.agents[2], 3)
	c.stays(0, time.Second)
}

// filepathOf is agent i's configuration file, as keyFiles writes it.
func filepathOf(c *cluster, i int) string {
	return filepath.Join(c.dir, fmt.Sprintf("agent-%d.hcl", i))
}

// TestKeyring_Errors: the operations refuse what would break gossip, and a change that
// cannot be saved is undone.
func TestKeyring_Errors(t *testing.T) {
	c := newCluster(t, 100)
	c.keyFiles = true
	a := c.start(0)
	oldKey, _ := base64.StdEncoding.DecodeString(c.key)
	for _, tt := range []struct {
		name string
		req  KeyringRequest
		want string
	}{
		{"ShortKey", KeyringRequest{Op: KeyringInstall, Key: []byte("short")}, "16, 24 or 32 bytes (got 5)"},
		{"UseNotInstalled", KeyringRequest{Op: KeyringUse, Key: bytes.Repeat([]byte("x"), 32)}, "not installed"},
		{"RemovePrimary", KeyringRequest{Op: KeyringRemove, Key: oldKey}, "sends with that key"},
		{"UnknownFingerprint", KeyringRequest{Op: KeyringRemove, Fingerprint: "sha256:0000000000000000"}, "no installed key"},
		{"UnknownOp", KeyringRequest{Op: "rotate", Key: oldKey}, `unknown operation "rotate"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := a.Keyring(context.Background(), tt.req); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("SaveFailsUndone", func(t *testing.T) {
		// The key file's path is taken by a directory now, so the new file cannot replace
		// it (even for root): the install is undone.
		path := c.keyFile(0)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(path, "in-the-way"), 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := a.Keyring(context.Background(), KeyringRequest{Op: KeyringInstall, Key: bytes.Repeat([]byte("y"), 32)})
		if err == nil || !strings.Contains(err.Error(), "undone") {
			t.Fatalf("err = %v, want the install undone", err)
		}
		v, err := a.Keyring(context.Background(), KeyringRequest{Op: KeyringList})
		if err != nil || len(v.Keys) != 1 || v.Keys[0].Fingerprint != KeyFingerprint(oldKey) {
			t.Fatalf("keys after an undone install: %+v (%v)", v.Keys, err)
		}
	})
}
