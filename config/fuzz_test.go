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

// FuzzLoadKeyFile loads a configuration whose gossip key file holds arbitrary bytes. A key
// is accepted exactly when the file holds base64 for 16, 24 or 32 bytes, and no error ever
// repeats what the file holds: the file is a secret, and errors end up in logs.
func FuzzLoadKeyFile(f *testing.F) {
	f.Add([]byte(testKeyB64 + "\n"))
	f.Add([]byte("  " + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) + "\r\n\t"))
	f.Add([]byte(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123"))))
	f.Add([]byte(strings.TrimRight(testKeyB64, "=")))
	f.Add([]byte(base64.URLEncoding.EncodeToString([]byte("\xff\xfe0123456789abcdef0123456789ab"))))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"))
	f.Add(bytes.Repeat([]byte("A"), 1025))
	f.Add([]byte{})
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
		want, decErr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(content)))
		valid := len(content) <= maxKeyFileSize && decErr == nil && slices.Contains([]int{16, 24, 32}, len(want))
		if valid != (err == nil) {
			t.Fatalf("key file %q: err = %v, want valid = %v", content, err, valid)
		}
		if err == nil {
			if !bytes.Equal(cfg.Gossip.EncryptKey, want) {
				t.Fatalf("key = %x, want %x", cfg.Gossip.EncryptKey, want)
			}
			return
		}
		secret := strings.TrimSpace(string(content))
		if len(secret) >= 12 && strings.Contains(err.Error(), secret[:12]) {
			t.Fatalf("error %q repeats the key file's content", err)
		}
		if len(want) >= 8 && strings.Contains(err.Error(), string(want[:8])) {
			t.Fatalf("error %q repeats the decoded key", err)
		}
		if n := len(err.Error()); n > 1000 {
			t.Fatalf("error of %d bytes", n)
		}
	})
}
