package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/natganker/natganker/agent/control"
	"github.com/natganker/natganker/config"
)

// preflight checks, before the agent asks or joins anyone, what can be checked on this host
// without side effects on the cluster, and claims the control socket.
//
// The socket comes first and is held, not just probed: a second agent started with the same
// configuration must be refused before its gossip joins the cluster under the first one's
// name, and holding the socket leaves no gap between the check and its use. The other checks
// report every problem at once. The gossip port can only be tried and released, since
// memberlist binds it itself; a port taken in the instants between is still reported, later,
// by the gossip start.
func preflight(cfg *config.Config) (*control.Listener, error) {
	ln, err := control.Listen(cfg.Control.Socket)
	if err != nil {
		var inUse *control.InUseError
		if errors.As(err, &inUse) {
			return nil, fmt.Errorf("%w: stop it first or set control.socket", err)
		}
		return nil, fmt.Errorf("control.socket: %w", err)
	}
	var problems []error
	for _, err := range []error{
		checkStateDir(cfg.Control.StateFile),
		checkGossipPort(cfg.Gossip),
		checkPublicInterface(cfg.Datapath),
	} {
		if err != nil {
			problems = append(problems, err)
		}
	}
	switch len(problems) {
	case 0:
		return ln, nil
	case 1:
		err = problems[0]
	default:
		err = fmt.Errorf("%d problems on this host:\n%w", len(problems), errors.Join(problems...))
	}
	if cerr := ln.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return nil, err
}

// checkStateDir makes sure the agent will be able to save its state: the directory exists
// (it is created, as the agent would create it) and a file can be created in it.
func checkStateDir(path string) error {
	if path == "" {
		return nil // no state kept
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("control.state_file: create directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".natganker-check-*")
	if err != nil {
		return fmt.Errorf("control.state_file: directory %s is not writable: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// checkGossipPort binds the gossip address and port over TCP and UDP, as memberlist will,
// and releases them at once.
func checkGossipPort(g config.Gossip) error {
	addr := net.JoinHostPort(g.BindAddr, strconv.Itoa(g.BindPort))
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("gossip.bind: %w", err)
	}
	tl.Close()
	ul, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("gossip.bind: %w", err)
	}
	ul.Close()
	return nil
}

// checkPublicInterface makes sure the interface the agent is to masquerade on exists. Only a
// missing interface is refused: one that is down only makes the node unhealthy, which the
// agent reports while it runs and recovers from when the interface comes up.
func checkPublicInterface(d config.Datapath) error {
	if !d.Manage {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("datapath.public_interface: query interface %q: %w", d.PublicInterface, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(d.PublicInterface)
	if err != nil {
		return fmt.Errorf("datapath.public_interface: query interface %q: %w", d.PublicInterface, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("datapath.public_interface: no interface %q on this host (datapath.manage is on)", d.PublicInterface)
		}
		return fmt.Errorf("datapath.public_interface: query interface %q: %w", d.PublicInterface, err)
	}
	return nil
}
