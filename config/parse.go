package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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

// maxKeyFileSize bounds a gossip key file, which holds 44 bytes of base64 and a newline.
const maxKeyFileSize = 1 << 10

// readKeyFile reads a file holding a base64 gossip key.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("key file %s is larger than %s: it should hold only the base64 key", path, formatSize(maxKeyFileSize))
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		// An empty key would leave gossip unencrypted.
		return nil, fmt.Errorf("key file %s is empty: it must hold the base64 key, as printed by `openssl rand -base64 32`", path)
	}
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("key file %s must hold base64, as printed by `openssl rand -base64 32` (%v)", path, err)
	}
	return key, nil
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
