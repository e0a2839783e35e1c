package config

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzLoadKeyFile loads a configuration whose gossip key file holds arbitrary bytes. The
// keys are accepted exactly when each non-blank line holds base64 for 16, 24 or 32 bytes
// (at most MaxKeys, none repeated), and no error ever repeats what the file holds: the file
// is a secret, and errors end up in logs.
func FuzzLoadKeyFile(f *testing.F) {
	f.Add([]byte(testKeyB64 + "\n"))
	f.Add([]byte("  " + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) + "\r\n\t"))
	f.Add([]byte(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123"))))
	f.Add([]byte(strings.TrimRight(testKeyB64, "=")))
	f.Add([]byte(base64.URLEncoding.EncodeToString([]byte("\xff\xfe0123456789abcdef0123456789ab"))))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"))
	f.Add(bytes.Repeat([]byte("A"), 1025))
	f.Add([]byte{})
	f.Add([]byte(testKeyB64 + "\n" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) + "\n"))
	f.Add([]byte(testKeyB64 + "\n\n" + testKeyB64 + "\n"))
	dir := f.TempDir()
	key := filepath.Join(dir, "gossip.key")
	cfgPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgPath, []byte(withKeyFile("gossip.key")), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		if err := os.WriteFile(key, content, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(cfgPath)
		// Valid: at most 1 KiB of lines, each blank or one base64 key of 16, 24 or 32
		// bytes, with 1 to MaxKeys keys, none repeated.
		var want [][]byte
		valid := len(content) <= maxKeyFileSize
		for _, line := range strings.Split(string(content), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			k, decErr := base64.StdEncoding.DecodeString(strings.TrimSpace(line))
			if decErr != nil || !slices.Contains([]int{16, 24, 32}, len(k)) ||
				slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(w, k) }) {
				valid = false
			}
			want = append(want, k)
		}
		valid = valid && len(want) >= 1 && len(want) <= MaxKeys
		if valid != (err == nil) {
			t.Fatalf("key file %q: err = %v, want valid = %v", content, err, valid)
		}
		if err == nil {
			got := append([][]byte{cfg.Gossip.EncryptKey}, cfg.Gossip.OtherKeys...)
			if !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("keys = %x, want %x", got, want)
			}
			return
		}
		for _, line := range strings.Split(string(content), "\n") {
			secret := strings.TrimSpace(line)
			if len(secret) >= 12 && strings.Contains(err.Error(), secret[:12]) {
				t.Fatalf("error %q repeats the key file's content", err)
			}
		}
		for _, k := range want {
			if len(k) >= 8 && strings.Contains(err.Error(), string(k[:8])) {
				t.Fatalf("error %q repeats a decoded key", err)
			}
		}
		if n := len(err.Error()); n > 1000 {
			t.Fatalf("error of %d bytes", n)
		}
	})
}
