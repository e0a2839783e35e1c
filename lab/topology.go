package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Prefix starts the name of every namespace and root-namespace interface the lab creates,
// so that Down can find and remove what a crashed run left behind without touching
// anything else.
const Prefix = "ngl-"

// Lab addresses. The private segment stands for the VPC subnet the NATs and the client
// share; the public subnet holds the NATs' public interfaces and the internet gateway, which
// maps public addresses one-to-one to their private addresses as AWS's does; beyond it is the
// internet.
const (
	PrivateCIDR  = "198.18.1.0/24"
	VPCCIDR      = "198.18.0.0/16"
	EndpointIP   = "198.18.1.2" // root namespace: EC2 endpoint (moto and the proxy)
	Nat1IP       = "198.18.1.11"
	Nat2IP       = "198.18.1.12"
	ClientIP     = "198.18.1.100"
	PublicSubnet = "198.18.2.0/24"
	Nat1PubIP    = "198.18.2.11" // nat1's pub0: the private address it masquerades to
	Nat2PubIP    = "198.18.2.12"
	IGWSubnetIP  = "198.18.2.1" // the gateway of the public subnet
	IGWInetIP    = "198.19.0.254"
	InetIP       = "198.19.0.1"
	ElasticIP    = "198.19.0.10"
	Nat1Public   = "198.19.0.11" // nat1's own public address while it does not hold the EIP
	Nat2Public   = "198.19.0.12"
	PublicRange  = "198.19.0.8/29" // the public addresses the gateway maps (EIP and both NATs')
	PublicPrefix = 24
	IMDSIP       = "169.254.169.254"
	UDPEchoPort  = 7
	TCPEchoPort  = 8
	PushPort     = 9  // inet pushes to the client, which only reads
	DownloadPort = 10 // inet streams a download to the client
)

// Host names as the lab knows them; the namespace is Prefix+name.
const (
	Nat1   = "nat1"
	Nat2   = "nat2"
	Client = "client"
	Inet   = "inet"
	IGW    = "igw"
	swtch  = "sw"
)

// NS returns the namespace name of a lab host.
func NS(host string) string { return Prefix + host }

// natIP returns the private address of a NAT host.
func natIP(host string) string {
	if host == Nat1 {
		return Nat1IP
	}
	return Nat2IP
}

// natPubIP returns the private address on a NAT's public interface.
func natPubIP(host string) string {
	if host == Nat1 {
		return Nat1PubIP
	}
	return Nat2PubIP
}

// natPublic returns a NAT's own public address, used while it does not hold the EIP.
func natPublic(host string) string {
	if host == Nat1 {
		return Nat1Public
	}
	return Nat2Public
}

// rootLink is the root namespace's port on the private bridge.
const rootLink = Prefix + "root"

// buildTopology creates the namespaces, the three bridges in the switch namespace (private
// subnet, public subnet, internet) and every host's links. A host is killed by taking its own
// interfaces down, so the switch keeps carrier towards the survivor, as a real VPC does.
func buildTopology(ctx context.Context) error {
	if err := addHosts(ctx, swtch, Nat1, Nat2, Client, Inet, IGW); err != nil {
		return err
	}
	if err := addBridges(ctx, "brpriv", "brpub", "brinet"); err != nil {
		return err
	}
	for _, w := range []wire{
		{Nat1, "priv0", "brpriv", "nat1-priv", []string{Nat1IP}},
		{Nat1, "pub0", "brpub", "nat1-pub", []string{Nat1PubIP}},
		{Nat2, "priv0", "brpriv", "nat2-priv", []string{Nat2IP}},
		{Nat2, "pub0", "brpub", "nat2-pub", []string{Nat2PubIP}},
		{Client, "eth0", "brpriv", "client-priv", []string{ClientIP}},
		{IGW, "pub0", "brpub", "igw-pub", []string{IGWSubnetIP}},
		{IGW, "inet0", "brinet", "igw-inet", []string{IGWInetIP}},
		{Inet, "eth0", "brinet", "inet-pub", []string{InetIP}},
	} {
		if err := connect(ctx, w); err != nil {
			return err
		}
	}
	// The root namespace joins the private segment as the EC2 endpoint.
	if err := connectRoot(ctx, "brpriv"); err != nil {
		return err
	}
	for _, nat := range []string{Nat1, Nat2} {
		if err := natBasics(ctx, nat); err != nil {
			return err
		}
		if err := natDefaultRoute(ctx, nat); err != nil {
			return err
		}
	}
	// The internet reaches the mapped public addresses through the gateway.
	if err := nsIP(ctx, NS(Inet), "route", "add", PublicRange, "via", IGWInetIP, "dev", "eth0"); err != nil {
		return err
	}
	if err := startIGW(ctx, nil); err != nil {
		return err
	}
	// Until the stand-in sees the route table, the client has no way out.
	return nsIP(ctx, NS(Client), "route", "replace", "unreachable", "default")
}

// addHosts creates a namespace per host, with loopback up and IPv6 off.
func addHosts(ctx context.Context, hosts ...string) error {
	for _, h := range hosts {
		if err := ip(ctx, "netns", "add", NS(h)); err != nil {
			return fmt.Errorf("create namespace %s: %w", h, err)
		}
		if err := nsIP(ctx, NS(h), "link", "set", "lo", "up"); err != nil {
			return err
		}
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := sysctl(ctx, NS(h), k, "1"); err != nil {
				return err
			}
		}
	}
	return nil
}

// addBridges creates bridges in the switch namespace.
func addBridges(ctx context.Context, bridges ...string) error {
	sw := NS(swtch)
	for _, br := range bridges {
		if err := nsIP(ctx, sw, "link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
			return fmt.Errorf("create bridge %s: %w", br, err)
		}
		if err := nsIP(ctx, sw, "link", "set", br, "up"); err != nil {
			return err
		}
	}
	return nil
}

// wire is one host interface on a bridge: dev in host's namespace, swPort its peer on br in
// the switch namespace, with addresses (/24 each).
type wire struct {
	host, dev, br, swPort string
	addrs                 []string
}

// connect creates w's veth pair, puts it on its bridge and gives the host's end its addresses.
func connect(ctx context.Context, w wire) error {
	sw := NS(swtch)
	if err := ip(ctx, "link", "add", w.swPort, "netns", sw, "type", "veth", "peer", "name", w.dev, "netns", NS(w.host)); err != nil {
		return fmt.Errorf("connect %s to %s: %w", w.host, w.br, err)
	}
	if err := nsIP(ctx, sw, "link", "set", w.swPort, "master", w.br, "up"); err != nil {
		return err
	}
	if err := nsIP(ctx, NS(w.host), "link", "set", w.dev, "up"); err != nil {
		return err
	}
	for _, a := range w.addrs {
		if err := nsIP(ctx, NS(w.host), "addr", "add", fmt.Sprintf("%s/%d", a, PublicPrefix), "dev", w.dev); err != nil {
			return err
		}
	}
	return nil
}

// connectRoot puts the root namespace on bridge br at EndpointIP, as the EC2 endpoint.
func connectRoot(ctx context.Context, br string) error {
	if err := ip(ctx, "link", "add", rootLink, "type", "veth", "peer", "name", "root-port", "netns", NS(swtch)); err != nil {
		return fmt.Errorf("connect root namespace: %w", err)
	}
	if err := nsIP(ctx, NS(swtch), "link", "set", "root-port", "master", br, "up"); err != nil {
		return err
	}
	if err := ip(ctx, "addr", "add", EndpointIP+"/24", "dev", rootLink); err != nil {
		return err
	}
	return ip(ctx, "link", "set", rootLink, "up")
}

// natBasics gives a NAT the metadata service's link-local address and turns reverse-path
// filtering off.
func natBasics(ctx context.Context, nat string) error {
	if err := nsIP(ctx, NS(nat), "addr", "add", IMDSIP+"/32", "dev", "lo"); err != nil {
		return err
	}
	return sysctl(ctx, NS(nat), "net.ipv4.conf.all.rp_filter", "0")
}

// RemoveAll deletes every namespace and root-namespace link whose name starts with Prefix,
// after killing the processes still running inside those namespaces. It is what `down`
// runs, and what every lab run does last.
func RemoveAll(ctx context.Context) error {
	var errs []error
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix) {
			continue
		}
		ns := f[0]
		if pids, err := run(ctx, "ip", "netns", "pids", ns); err == nil {
			for _, p := range strings.Fields(pids) {
				killPID(p)
			}
		}
		if err := ip(ctx, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + rootLink); err == nil {
		if err := ip(ctx, "link", "del", rootLink); err != nil {
			errs = append(errs, err)
		}
	}
	killRecorded()
	return errors.Join(errs...)
}
