package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/json"
)

// Load reads the configuration file at path, parses it like Parse, and also reads the
// gossip key named by encrypt_key_file into Gossip.EncryptKey. A relative encrypt_key_file
// is taken relative to the directory holding the configuration file.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	// Read one byte past the limit to tell a file at the limit from a larger one, and no
	// more: path may name a device that never ends.
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(src) > maxFileSize {
		size := "more than " + formatSize(maxFileSize)
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = formatSize(fi.Size())
		}
		return nil, tooLarge(path, size)
	}
	return parse(path, src, filepath.Dir(path))
}

// Parse parses the HCL configuration in src on top of Default, applies the gossip profile
// to the timings not set explicitly, and validates the result. filename is used in error
// messages only; a name ending in ".json" selects HCL's JSON syntax. Parse reads no other
// file: a key given by encrypt_key_file is left for Load to read.
//
// The error, if any, holds one line per problem (joined with errors.Join), in file order,
// each starting with the file position when it is known. After 20 lines one more says how
// many problems were left out. A file larger than 32 KiB is refused unread.
func Parse(filename string, src []byte) (*Config, error) {
	if len(src) > maxFileSize {
		return nil, tooLarge(filename, formatSize(int64(len(src))))
	}
	return parse(filename, src, "")
}

// parse implements Parse and Load. keyDir is empty for Parse (key files are not read) and
// the configuration file's directory for Load.
func parse(filename string, src []byte, keyDir string) (*Config, error) {
	if err := notText(filename, src); err != nil {
		return nil, err
	}
	isJSON := strings.HasSuffix(filename, ".json")
	if p := checkNesting(filename, src, isJSON); p != nil {
		return nil, problems{*p}.err()
	}
	var file *hcl.File
	var diags hcl.Diagnostics
	if isJSON {
		file, diags = json.Parse(src, filename)
	} else {
		file, diags = hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	}
	if diags.HasErrors() {
		var ps problems
		ps.addDiags(diags, "")
		return nil, ps.err()
	}

	d := &decoder{cfg: Default(), keyDir: keyDir}
	d.cfg.ranges = make(map[string]hcl.Range)
	d.file(file.Body)
	if err := d.problems.err(); err != nil {
		return nil, err
	}
	if err := d.cfg.Validate(); err != nil {
		return nil, err
	}
	return d.cfg, nil
}

// maxKeyFileSize bounds a gossip key file, which holds a few lines of 44 bytes of base64.
const maxKeyFileSize = 1 << 10

// MaxKeys is the most keys a key file (and so a keyring) may hold: the key in use and the
// ones of a rotation in progress.
const MaxKeys = 8

// readKeyFile reads a file holding base64 gossip keys, one per line: the first is the key
// this node sends with, the others are accepted too (a rotation in progress). No error repeats
// what the file holds: it is a secret, and errors end up in logs.
func readKeyFile(path string) (primary []byte, others [][]byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read key file: %w", err)
	}
	if len(b) > maxKeyFileSize {
		return nil, nil, fmt.Errorf("key file %s is larger than %s: it should hold only base64 keys, one per line", path, formatSize(maxKeyFileSize))
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		text := strings.TrimSpace(line)
		if text == "" {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, nil, fmt.Errorf("key file %s line %d must hold base64, as printed by `natganker-agent keygen` (%v)", path, i+1, err)
		}
		if !slices.Contains([]int{16, 24, 32}, len(key)) {
			return nil, nil, fmt.Errorf("key file %s line %d: key must decode to 16, 24 or 32 bytes (got %d bytes)", path, i+1, len(key))
		}
		if slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) }) {
			return nil, nil, fmt.Errorf("key file %s line %d repeats a key", path, i+1)
		}
		keys = append(keys, key)
	}
	switch {
	case len(keys) == 0:
		// An empty key would leave gossip unencrypted.
		return nil, nil, fmt.Errorf("key file %s is empty: it must hold the base64 key, as printed by `natganker-agent keygen`", path)
	case len(keys) > MaxKeys:
		return nil, nil, fmt.Errorf("key file %s holds %d keys, more than %d", path, len(keys), MaxKeys)
	}
	return keys[0], keys[1:], nil
}

// WriteKeyFile replaces the key file at path with primary on the first line and others
// after it, atomically (a temporary file beside it, then rename) and with mode 0600, so that
// the file always holds what a running keyring holds and an agent restarted at any moment
// reads a whole file.
func WriteKeyFile(path string, primary []byte, others [][]byte) error {
	if len(others)+1 > MaxKeys {
		return fmt.Errorf("write key file: %d keys, more than %d", len(others)+1, MaxKeys)
	}
	var buf strings.Builder
	for _, k := range append([][]byte{primary}, others...) {
		buf.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if _, err := tmp.WriteString(buf.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port", using defPort when
// no port is given.
func splitHostPort(s string, defPort int) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("empty address")
	}
	if net.ParseIP(s) != nil {
		return s, defPort, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host := s[1 : len(s)-1]
		if net.ParseIP(host) == nil {
			return "", 0, fmt.Errorf("bad IPv6 address %q", host)
		}
		return host, defPort, nil
	}
	if !strings.Contains(s, ":") {
		return s, defPort, nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portStr)
	}
	if host == "" {
		return "", 0, errors.New("empty host")
	}
	return host, port, nil
}
