package gossip

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"
	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// maxPacket is the largest UDP payload there is; memberlist's own packets are far smaller.
const maxPacket = 65536

// udpReadBuffer is the receive buffer asked of the kernel for the gossip socket, so that a
// burst of probes from many members is not dropped while the reader is busy.
const udpReadBuffer = 2 << 20

// transport is memberlist's network layer: one UDP socket for probes and gossip and one TCP
// listener for push-pull and joins, on the same address and port. It does what memberlist's
// own transport does, but reads every packet into one reused buffer and hands memberlist an
// exact-size copy: memberlist's transport allocates a fresh 64 KiB buffer for every packet
// it receives, which at a heartbeat every 50 ms was most of what an idle agent allocated,
// and so most of its garbage collection.
type transport struct {
	udp      *net.UDPConn
	tcp      *net.TCPListener
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	logger   *log.Logger
	shutdown atomic.Bool
	// done is closed by Shutdown: a packet or stream nobody takes any more is dropped.
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

var _ memberlist.Transport = (*transport)(nil)

// newTransport listens on addr:port, TCP first so that port 0 picks a port free for both.
func newTransport(addr string, port int, logger *log.Logger) (*transport, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", addr)
	}
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = tcp.Addr().(*net.TCPAddr).Port
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	// The kernel caps the size at net.core.rmem_max without an error; less is still a buffer.
	_ = udp.SetReadBuffer(udpReadBuffer)
	t := &transport{udp: udp, tcp: tcp, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), logger: logger,
		done: make(chan struct{})}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// port is the port both sockets are bound to.
func (t *transport) port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr implements memberlist.Transport: the address given, else the bound
// one, else (bound to every address) a private address of this host; port 0 means the bound
// port.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.port()
	}
	if ip == "" {
		bound := t.tcp.Addr().(*net.TCPAddr).IP
		if !bound.IsUnspecified() {
			return bound, port, nil
		}
		private, err := sockaddr.GetPrivateIP()
		if err != nil {
			return nil, 0, fmt.Errorf("find a private address to advertise: %w", err)
		}
		if private == "" {
			return nil, 0, errors.New("no private address to advertise: set gossip's advertise address")
		}
		ip = private
	}
	adv := net.ParseIP(ip)
	if adv == nil {
		return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
	}
	if v4 := adv.To4(); v4 != nil {
		adv = v4
	}
	return adv, port, nil
}

// WriteTo implements memberlist.Transport. memberlist names peers by ip:port, which is
// parsed without the resolver and sent without allocating; a host name still resolves.
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ap, err := udpAddrPort(addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return time.Now(), err
}

// udpAddrPort is addr (ip:port, or host:port resolved) as an IPv4 address where it is one,
// as the socket's family needs.
func udpAddrPort(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		ua, rerr := net.ResolveUDPAddr("udp", addr)
		if rerr != nil {
			return netip.AddrPort{}, rerr
		}
		ap = ua.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// udpAddr is addr as a *net.UDPAddr, parsed without the resolver when it is ip:port.
func udpAddr(addr string) (*net.UDPAddr, error) {
	ap, err := udpAddrPort(addr)
	if err != nil {
		return nil, err
	}
	return net.UDPAddrFromAddrPort(ap), nil
}

// PacketCh implements memberlist.Transport.
func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// StreamCh implements memberlist.Transport.
func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: it closes both sockets and waits for the
// readers to end.
func (t *transport) Shutdown() error {
	t.shutdown.Store(true)
	t.once.Do(func() { close(t.done) })
	t.tcp.Close()
	t.udp.Close()
	t.wg.Wait()
	return nil
}

// readPackets hands memberlist every UDP packet, copied out of one reused buffer.
func (t *transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			t.logger.Printf("[ERR] gossip: read a UDP packet: %v", err)
			continue
		}
		if n == 0 {
			t.logger.Printf("[ERR] gossip: empty UDP packet from=%s", from)
			continue
		}
		metrics.IncrCounter([]string{"memberlist", "udp", "received"}, float32(n))
		select {
		case t.packets <- &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: at}:
		case <-t.done:
			return
		}
	}
}

// acceptStreams hands memberlist every TCP connection, backing off while accepting fails.
func (t *transport) acceptStreams() {
	defer t.wg.Done()
	const first, most = 5 * time.Millisecond, time.Second
	var wait time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			wait = min(max(2*wait, first), most)
			t.logger.Printf("[ERR] gossip: accept a TCP connection on port %s: %v", strconv.Itoa(t.port()), err)
			time.Sleep(wait)
			continue
		}
		wait = 0
		select {
		case t.streams <- conn:
		case <-t.done:
			conn.Close()
			return
		}
	}
}
