package conntrack

import (
	"os/exec"
	"strings"
	"testing"
)

// listGuard is the guard's table as nft(8) prints it in the namespace at path.
func listGuard(t *testing.T, path string) string {
	t.Helper()
	ns := path[strings.LastIndex(path, "/")+1:]
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "ip", GuardTable).CombinedOutput()
	if err != nil {
		return "error: " + strings.TrimSpace(string(out))
	}
	return string(out)
}

// The guard's rules, read back from the kernel by nft(8): what the package comment says.
func TestGuard_Rules(t *testing.T) {
	fd, path := newNamedNamespace(t)
	g := &Guard{NetNS: fd}
	holdingRule := `meta l4proto tcp ct state new ct mark set ct mark | 0x40000000`
	notHolding := []string{
		`meta l4proto tcp ct direction reply ct mark & 0x40000000 != 0x00000000 counter packets 0 bytes 0`,
		`meta l4proto tcp ct direction original ct mark & 0x40000000 != 0x00000000 drop`,
		`ct state new tcp flags != syn / syn,ack drop`, // nft prints the l4proto match as the dependency of tcp flags
	}
	for _, step := range []struct {
		holding bool
		want    []string
		notWant []string
	}{
		{false, notHolding, []string{holdingRule}},
		{true, []string{holdingRule}, notHolding},
		{false, notHolding, []string{holdingRule}},
	} {
		if err := g.Set(step.holding); err != nil {
			t.Fatalf("Set(%v): %v", step.holding, err)
		}
		got := listGuard(t, path)
		for _, w := range step.want {
			if !strings.Contains(got, w) {
				t.Errorf("holding=%v: rule %q missing:\n%s", step.holding, w, got)
			}
		}
		for _, w := range step.notWant {
			if strings.Contains(got, w) {
				t.Errorf("holding=%v: rule %q still there:\n%s", step.holding, w, got)
			}
		}
		if !strings.Contains(got, "type filter hook forward priority filter; policy accept;") {
			t.Errorf("holding=%v: not a forward filter chain with policy accept:\n%s", step.holding, got)
		}
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := listGuard(t, path); !strings.HasPrefix(got, "error:") {
		t.Errorf("the table is still there after Remove:\n%s", got)
	}
	if err := g.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
