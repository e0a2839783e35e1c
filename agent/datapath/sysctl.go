package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// readSysctl reads a sysctl such as "net/ipv4/ip_forward". Files under /proc/sys/net belong
// to the network namespace of the reading thread, so this reads the current namespace's.
func (d *Datapath) readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.procSys, key))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", dotted(key), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ensureSysctl writes value to a sysctl unless it already holds it.
func (d *Datapath) ensureSysctl(key, value string) error {
	old, err := d.readSysctl(key)
	if err != nil {
		return err
	}
	if old == value {
		return nil
	}
	if err := os.WriteFile(filepath.Join(d.procSys, key), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("set %s=%s: %w", dotted(key), value, err)
	}
	d.logger.Info("set sysctl", "key", dotted(key), "old", old, "new", value)
	return nil
}

// dotted names a sysctl the way sysctl(8) does; a dot inside an interface name becomes '/'.
func dotted(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}
