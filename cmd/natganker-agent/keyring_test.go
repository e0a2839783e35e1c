package main

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/natganker/natganker/agent"
)

// keyringController is the fake controller with a keyring: it records the requests.
type keyringController struct {
	*fakeController
	reqs []agent.KeyringRequest
}

func (k *keyringController) Keyring(_ context.Context, req agent.KeyringRequest) (agent.KeyringView, error) {
	k.reqs = append(k.reqs, req)
	return agent.KeyringView{Keys: []agent.KeyView{{Fingerprint: "sha256:00112233aabbccdd", Primary: true}, {Fingerprint: "sha256:ffeeddccbbaa9988"}},
		Saved: "/etc/natganker/gossip.key"}, nil
}

func TestKeygen(t *testing.T) {
	a, b := run(t, "keygen"), run(t, "keygen")
	for _, r := range []result{a, b} {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.stdout))
		if r.code != 0 || err != nil || len(key) != 32 {
			t.Fatalf("keygen: code %d, %q (%v)", r.code, r.stdout, err)
		}
	}
	if a.stdout == b.stdout {
		t.Fatal("two keygens printed the same key")
	}
}

func TestKeyringCommand(t *testing.T) {
	k := &keyringController{fakeController: newFake()}
	sock := startAgent(t, k)
	key := base64.StdEncoding.EncodeToString([]byte("a-new-gossip-key-32-bytes-long!!"))

	r := run(t, "keyring", "-socket", sock)
	if r.code != 0 || !strings.Contains(r.stdout, "sha256:00112233aabbccdd  primary (sent with)") ||
		!strings.Contains(r.stdout, "sha256:ffeeddccbbaa9988  accepted") {
		t.Fatalf("list: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, "keyring", "-socket", sock, "-install", key)
	if r.code != 0 || !strings.Contains(r.stdout, "saved to /etc/natganker/gossip.key") {
		t.Fatalf("install: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, "keyring", "-socket", sock, "-remove", "sha256:ffeeddccbbaa9988")
	if r.code != 0 {
		t.Fatalf("remove by fingerprint: code %d\n%s", r.code, r.stderr)
	}
	if len(k.reqs) != 3 || k.reqs[1].Op != "install" || base64.StdEncoding.EncodeToString(k.reqs[1].Key) != key ||
		k.reqs[2].Op != "remove" || k.reqs[2].Fingerprint != "sha256:ffeeddccbbaa9988" || k.reqs[2].Key != nil {
		t.Fatalf("requests: %+v", k.reqs)
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"TwoOps", []string{"-install", key, "-use", key}, "give one of -list, -install, -use, -remove"},
		{"NotBase64", []string{"-use", "not*base64*secret"}, "must be base64"},
		{"Short", []string{"-install", base64.StdEncoding.EncodeToString([]byte("short"))}, "16, 24 or 32 bytes (got 5)"},
		{"FingerprintInstall", []string{"-install", "sha256:ffeeddccbbaa9988"}, "needs the key itself"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"keyring", "-socket", sock}, tt.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("code %d, stderr %q; want usage error %q", r.code, r.stderr, tt.want)
			}
			if strings.Contains(r.stderr, "secret") {
				t.Fatalf("the error repeats the key argument: %q", r.stderr)
			}
		})
	}
	if len(k.reqs) != 3 {
		t.Fatalf("a refused command reached the agent: %+v", k.reqs)
	}

	// An agent without a keyring says so.
	plain := startAgent(t, newFake())
	if r := run(t, "keyring", "-socket", plain); r.code != 1 || !strings.Contains(r.stderr, "has no keyring") {
		t.Fatalf("agent without keyring: code %d, %q", r.code, r.stderr)
	}
}
