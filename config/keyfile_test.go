package config

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const testKeyB64 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// withKeyFile is minimal with its gossip key read from path.
func withKeyFile(path string) string {
	return strings.Replace(minimal, "insecure_plaintext = true", `encrypt_key_file = "`+path+`"`, 1)
}

// writeMode writes content to path and sets mode, whatever the umask.
func writeMode(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	writeFile(t, path, content)
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestKeyFileWarnings(t *testing.T) {
	t.Run("KeyFileModes", func(t *testing.T) {
		cases := []struct {
			mode fs.FileMode
			want string // the warning's text after "mode "; "" means no warning
		}{
			{0o600, ""},
			{0o400, ""},
			{0o700, ""},
			{0o601, ""}, // execute only: nothing to read or write
			{0o640, "0640: group can read it; "},
			{0o644, "0644: group and others can read it; "},
			{0o604, "0604: others can read it; "},
			{0o620, "0620: group can write it; "},
			{0o666, "0666: group and others can read and write it; "},
			{0o646, "0646: group can read it, others can read and write it; "},
		}
		for _, tc := range cases {
			t.Run(tc.mode.String(), func(t *testing.T) {
				dir := t.TempDir()
				key := filepath.Join(dir, "gossip.key")
				writeMode(t, key, testKeyB64+"\n", tc.mode)
				cfgPath := filepath.Join(dir, "agent.hcl")
				writeMode(t, cfgPath, withKeyFile("gossip.key"), 0o644) // holds no secret
				cfg, err := Load(cfgPath)
				if err != nil {
					t.Fatal(err)
				}
				got := KeyFileWarnings(cfg)
				if tc.want == "" {
					if len(got) != 0 {
						t.Errorf("warnings %v for mode %04o", got, uint32(tc.mode))
					}
					return
				}
				if len(got) != 1 {
					t.Fatalf("warnings = %v, want one", got)
				}
				want := "gossip.encrypt_key_file: " + key + " has mode " + tc.want +
					"whoever reads the gossip key can forge gossip and trigger failovers: chmod 600 " + key
				if s := got[0].String(); s != want {
					t.Errorf("warning:\n got %q\nwant %q", s, want)
				}
				wantW := KeyFileWarning{Setting: "gossip.encrypt_key_file", Path: key, Mode: tc.mode}
				if got[0] != wantW || got[0].Fix() != "chmod 600 "+key {
					t.Errorf("warning = %+v (fix %q), want %+v", got[0], got[0].Fix(), wantW)
				}
			})
		}
	})
	t.Run("SymlinkToPrivateFile", func(t *testing.T) {
		dir := t.TempDir()
		key := filepath.Join(dir, "real.key")
		writeMode(t, key, testKeyB64, 0o600)
		link := filepath.Join(dir, "gossip.key")
		if err := os.Symlink(key, link); err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(dir, "agent.hcl")
		writeFile(t, cfgPath, withKeyFile(link))
		cfg, err := Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if got := KeyFileWarnings(cfg); len(got) != 0 {
			t.Errorf("warnings %v for a link to a private key", got)
		}
	})
	t.Run("KeyInConfigFile", func(t *testing.T) {
		inline := strings.Replace(minimal, "insecure_plaintext = true", `encrypt_key = "`+testKeyB64+`"`, 1)
		for _, tc := range []struct {
			mode fs.FileMode
			warn bool
		}{{0o600, false}, {0o644, true}} {
			cfgPath := filepath.Join(t.TempDir(), "agent.hcl")
			writeMode(t, cfgPath, inline, tc.mode)
			cfg, err := Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			got := KeyFileWarnings(cfg)
			if !tc.warn {
				if len(got) != 0 {
					t.Errorf("mode %04o: warnings %v", uint32(tc.mode), got)
				}
				continue
			}
			want := []KeyFileWarning{{Setting: "gossip.encrypt_key", Path: cfgPath, Mode: 0o644}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("warnings = %+v, want %+v", got, want)
			}
			wantText := "gossip.encrypt_key: the configuration file " + cfgPath + ", which holds the gossip key, has mode 0644: " +
				"group and others can read it; whoever reads the gossip key can forge gossip and trigger failovers: chmod 600 " + cfgPath
			if got[0].String() != wantText {
				t.Errorf("warning:\n got %q\nwant %q", got[0].String(), wantText)
			}
		}
	})
	t.Run("NoFileNoWarning", func(t *testing.T) {
		// Parsed from bytes, built in code, or without a key: there is no file to check.
		parsed, err := Parse("agent.hcl", []byte(strings.Replace(minimal, "insecure_plaintext = true", `encrypt_key = "`+testKeyB64+`"`, 1)))
		if err != nil {
			t.Fatal(err)
		}
		built := Default()
		built.Gossip.EncryptKey = []byte("0123456789abcdef")
		for name, cfg := range map[string]*Config{"Parsed": parsed, "Built": built, "Plaintext": mustParse(t, minimal)} {
			if got := KeyFileWarnings(cfg); len(got) != 0 {
				t.Errorf("%s: warnings %v", name, got)
			}
		}
	})
}

// TestWriteKeyFile writes what Load reads back, private to its owner, over a file that was
// not, and refuses more keys than a keyring holds.
func TestWriteKeyFile(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.hcl")
	keyPath := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(cfgPath, []byte(withKeyFile("gossip.key")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, []byte(testKeyB64+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	primary, other := []byte("0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
	if err := WriteKeyFile(keyPath, primary, [][]byte{other}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg.Gossip.EncryptKey, primary) || len(cfg.Gossip.OtherKeys) != 1 || !bytes.Equal(cfg.Gossip.OtherKeys[0], other) {
		t.Fatalf("read back %x + %x", cfg.Gossip.EncryptKey, cfg.Gossip.OtherKeys)
	}
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".gossip.key.*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := WriteKeyFile(keyPath, primary, make([][]byte, MaxKeys)); err == nil {
		t.Error("a keyring of more than MaxKeys was written")
	}
}
