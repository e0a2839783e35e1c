package gossip

import (
	"bytes"
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func startTransport(t *testing.T) *transport {
	t.Helper()
	tr, err := newTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr
}

func nextPacket(t *testing.T, tr *transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no packet")
		return nil
	}
}

// Each packet memberlist gets is its own exact-size copy: the read buffer is reused, so a
// packet that shared it would change under memberlist's feet when the next one arrives.
func TestTransport_PacketsAreOwnCopies(t *testing.T) {
	tr := startTransport(t)
	to := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port()))
	first, second := []byte("first packet"), bytes.Repeat([]byte{'x'}, 1200)
	if _, err := tr.WriteTo(first, to); err != nil {
		t.Fatal(err)
	}
	p1 := nextPacket(t, tr)
	if _, err := tr.WriteTo(second, to); err != nil {
		t.Fatal(err)
	}
	p2 := nextPacket(t, tr)
	if !bytes.Equal(p1.Buf, first) || !bytes.Equal(p2.Buf, second) {
		t.Fatalf("packets = %q, %d bytes; want %q, %d bytes", p1.Buf, len(p2.Buf), first, len(second))
	}
	if cap(p1.Buf) > 2*len(first) {
		t.Fatalf("packet of %d bytes holds a %d-byte buffer", len(p1.Buf), cap(p1.Buf))
	}
	if p1.From.String() != to || p1.Timestamp.IsZero() {
		t.Fatalf("from %s at %v, want from %s with a time", p1.From, p1.Timestamp, to)
	}
}

// Port 0 picks one port for UDP and TCP alike, and that is the port advertised; a stream
// dialled to it reaches memberlist.
func TestTransport_OnePortForBoth(t *testing.T) {
	tr := startTransport(t)
	if got := tr.udp.LocalAddr().(*net.UDPAddr).Port; got != tr.port() {
		t.Fatalf("UDP on %d, TCP on %d", got, tr.port())
	}
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.ParseIP("127.0.0.1")) || port != tr.port() {
		t.Fatalf("advertise = %v:%d (%v), want 127.0.0.1:%d", ip, port, err, tr.port())
	}
	ip, port, err = tr.FinalAdvertiseAddr("198.18.1.11", 7946)
	if err != nil || ip.String() != "198.18.1.11" || len(ip) != net.IPv4len || port != 7946 {
		t.Fatalf("advertise = %v:%d (%v), want the address given", ip, port, err)
	}
	if _, _, err := tr.FinalAdvertiseAddr("nat-1", 7946); err == nil {
		t.Fatal("a name was accepted as the advertise address")
	}
	c, err := tr.DialTimeout(net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port())), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case s := <-tr.StreamCh():
		s.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the stream never reached memberlist")
	}
}

// A port in use is a clear error, and nothing is left listening.
func TestTransport_PortInUse(t *testing.T) {
	tr := startTransport(t)
	if _, err := newTransport("127.0.0.1", tr.port(), log.New(io.Discard, "", 0)); err == nil {
		t.Fatal("a second transport bound the same port")
	}
	if _, err := newTransport("not-an-ip", 0, log.New(io.Discard, "", 0)); err == nil {
		t.Fatal("a bind address that is not an IP was accepted")
	}
}

// Shutdown ends both readers, even with a packet and a stream that nobody takes.
func TestTransport_Shutdown(t *testing.T) {
	tr, err := newTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	to := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port()))
	if _, err := tr.WriteTo([]byte("unread"), to); err != nil {
		t.Fatal(err)
	}
	c, err := tr.DialTimeout(to, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() { _ = tr.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}
