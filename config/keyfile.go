package config

import (
	"fmt"
	"io/fs"
	"os"
)

// KeyFileWarning is a file holding the gossip key that users other than its owner can read
// or write. Whoever reads the key can forge gossip, and whoever writes it can change the key
// the agent will use at its next start. It is a warning, not an error: the agent runs, but the
// file should be fixed.
type KeyFileWarning struct {
	// Setting is where the key comes from: gossip.encrypt_key_file, or gossip.encrypt_key
	// when the key is written in the configuration file itself.
	Setting string
	// Path is the file holding the key.
	Path string
	// Mode is the file's permission bits.
	Mode fs.FileMode
}

// Fix is the command that makes the file private to its owner.
func (w KeyFileWarning) Fix() string { return "chmod 600 " + w.Path }

// String says what is wrong and what to run, in one line.
func (w KeyFileWarning) String() string {
	what := w.Path
	if w.Setting == "gossip.encrypt_key" {
		what = "the configuration file " + w.Path + ", which holds the gossip key,"
	}
	return fmt.Sprintf("%s: %s has mode %04o: %s; whoever reads the gossip key can forge gossip and trigger failovers: %s",
		w.Setting, what, uint32(w.Mode), access(w.Mode), w.Fix())
}

// keyFileUnsafe are the permission bits that make a key file a warning: read or write by the
// file's group or by others.
const keyFileUnsafe fs.FileMode = 0o066

// KeyFileWarnings checks the permissions of the files holding cfg's gossip key: the file
// named by encrypt_key_file, or the configuration file itself when the key is written in it
// with encrypt_key. Call it on a Config returned by Load, whose paths are resolved. A file
// that cannot be inspected gives no warning: Load has just read it.
func KeyFileWarnings(cfg *Config) []KeyFileWarning {
	setting, path := "", ""
	switch {
	case cfg.Gossip.EncryptKeyFile != "":
		setting, path = "gossip.encrypt_key_file", cfg.Gossip.EncryptKeyFile
	case len(cfg.Gossip.EncryptKey) > 0:
		r, ok := cfg.ranges["gossip.encrypt_key"]
		if !ok || r.Filename == "" {
			return nil // built in code, not read from a file
		}
		setting, path = "gossip.encrypt_key", r.Filename
	default:
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&keyFileUnsafe == 0 {
		return nil
	}
	return []KeyFileWarning{{Setting: setting, Path: path, Mode: fi.Mode().Perm()}}
}

// access says who besides the owner may read or write a file of mode m: "group can read it",
// "group and others can read it", "group can read it, others can read and write it".
func access(m fs.FileMode) string {
	can := func(read, write fs.FileMode) string {
		switch {
		case m&read != 0 && m&write != 0:
			return "read and write"
		case m&read != 0:
			return "read"
		case m&write != 0:
			return "write"
		}
		return ""
	}
	group, others := can(0o040, 0o020), can(0o004, 0o002)
	switch {
	case group == others:
		return "group and others can " + group + " it"
	case others == "":
		return "group can " + group + " it"
	case group == "":
		return "others can " + others + " it"
	}
	return "group can " + group + " it, others can " + others + " it"
}
