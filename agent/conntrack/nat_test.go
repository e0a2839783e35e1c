package conntrack

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// A flow that cannot be installed is refused before anything is sent.
func TestEncodeNew_Refuses(t *testing.T) {
	ok := Flow{Proto: TCP, Src: netip.MustParseAddrPort("198.18.1.100:40000"), Dst: netip.MustParseAddrPort("198.19.0.1:443"),
		NAT: netip.MustParseAddrPort("198.18.1.12:40000"), TCPState: TCPEstablished, Timeout: 300}
	if _, err := encodeNew(ok); err != nil {
		t.Fatalf("a TCP flow was refused: %v", err)
	}
	for name, f := range map[string]func(*Flow){
		"icmp":       func(f *Flow) { f.Proto = unix.IPPROTO_ICMP },
		"ipv6":       func(f *Flow) { f.Dst = netip.MustParseAddrPort("[2001:db8::1]:443") },
		"no nat":     func(f *Flow) { f.NAT = netip.AddrPort{} },
		"no timeout": func(f *Flow) { f.Timeout = 0 },
	} {
		bad := ok
		f(&bad)
		if _, err := encodeNew(bad); err == nil {
			t.Errorf("%s: a flow that cannot be installed was encoded", name)
		}
	}
}

// newNamespace creates a network namespace that masquerades, as a NAT's does, and returns
// a file descriptor of it.
func newNamespace(t testing.TB) int {
	fd, _ := newNamedNamespace(t)
	return fd
}

// newNamedNamespace is newNamespace that also returns the namespace's path.
func newNamedNamespace(t testing.TB) (int, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create a network namespace")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not found (install iproute2 and nftables)", bin)
		}
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := "ngct-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("create namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v: %s", ns, err, out)
		}
	})
	nft := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader("table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  masquerade\n }\n}\n")
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s", ns, err, out)
	}
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd()), f.Name()
}

// dump reads the namespace's conntrack table with the library the agent reads it with.
func dump(t *testing.T, netns int) []ct.Flow {
	t.Helper()
	c, err := ct.Dial(&netlink.Config{NetNS: netns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	return flows
}

// find returns the flow whose original tuple starts at src.
func find(flows []ct.Flow, src netip.AddrPort) (ct.Flow, bool) {
	for _, f := range flows {
		if f.TupleOrig.IP.SourceAddress == src.Addr() && f.TupleOrig.Proto.SourcePort == src.Port() {
			return f, true
		}
	}
	return ct.Flow{}, false
}

// Installed flows carry their NAT mapping in the kernel: the reply goes to the NAT address
// and the mapped port, the flow is source-NATed, and a TCP flow keeps its state. Installing
// the same flow twice is EEXIST.
func TestInstall_KernelKeepsTheMapping(t *testing.T) {
	netns := newNamespace(t)
	in, err := NewInstaller(netns)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	flows := []Flow{
		{Proto: TCP, Src: netip.MustParseAddrPort("198.18.1.100:40000"), Dst: netip.MustParseAddrPort("198.19.0.1:443"),
			NAT: netip.MustParseAddrPort("198.18.1.12:40000"), Status: StatusSeenReply | StatusAssured, TCPState: TCPEstablished, Timeout: 600, Mark: FlowMark},
		// The owner had mapped this one to another port: the port must come across too.
		{Proto: UDP, Src: netip.MustParseAddrPort("198.18.1.100:40001"), Dst: netip.MustParseAddrPort("198.19.0.1:53"),
			NAT: netip.MustParseAddrPort("198.18.1.12:61001"), Status: StatusSeenReply, Timeout: 120},
	}
	for _, f := range flows {
		if err := in.Install(f); err != nil {
			t.Fatal(err)
		}
	}
	table := dump(t, netns)
	for _, want := range flows {
		got, ok := find(table, want.Src)
		if !ok {
			t.Fatalf("flow from %s not in the table (%d flows)", want.Src, len(table))
		}
		reply := netip.AddrPortFrom(got.TupleReply.IP.DestinationAddress, got.TupleReply.Proto.DestinationPort)
		if reply != want.NAT {
			t.Errorf("flow from %s: replies go to %s, want %s", want.Src, reply, want.NAT)
		}
		if d := netip.AddrPortFrom(got.TupleOrig.IP.DestinationAddress, got.TupleOrig.Proto.DestinationPort); d != want.Dst {
			t.Errorf("flow from %s: goes to %s, want %s", want.Src, d, want.Dst)
		}
		if got.Mark != want.Mark {
			t.Errorf("flow from %s: mark %#x, want %#x", want.Src, got.Mark, want.Mark)
		}
		if !got.Status.SrcNAT() {
			t.Errorf("flow from %s: not source-NATed (status %v)", want.Src, got.Status)
		}
		if want.Proto == TCP && got.ProtoInfo.TCP != nil && got.ProtoInfo.TCP.State != TCPEstablished {
			t.Errorf("flow from %s: TCP state %d, want %d", want.Src, got.ProtoInfo.TCP.State, TCPEstablished)
		}
		if want.Proto == TCP && got.ProtoInfo.TCP == nil {
			t.Errorf("flow from %s: no TCP state", want.Src)
		}
	}
	if err := in.Install(flows[0]); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second install of the same flow: err = %v, want EEXIST", err)
	}
}

// Check asks the kernel of this process's namespace; a kernel with ctnetlink answers.
func TestKernel_Check(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: ctnetlink needs root")
	}
	if err := (&Kernel{}).Check(); err != nil {
		t.Fatal(err)
	}
}
