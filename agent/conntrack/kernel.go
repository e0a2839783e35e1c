package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Kernel is the conntrack table of this process's network namespace, as the agent uses it.
type Kernel struct {
	// PublicInterface is the interface this node masquerades out of; its first IPv4
	// address is the one installed flows are mapped to. Empty: keep each flow's mapping.
	PublicInterface string

	guard Guard
}

// Hold makes the guard's rules say whether this node holds the Elastic IP (see Guard).
func (k *Kernel) Hold(holding bool) error { return k.guard.Set(holding) }

// EIPSeen reports whether a packet of a guarded connection came in since the guard last
// stopped holding (see Guard.EIPSeen).
func (k *Kernel) EIPSeen() (bool, error) { return k.guard.EIPSeen() }

// RemoveGuard removes the guard's rules.
func (k *Kernel) RemoveGuard() error { return k.guard.Remove() }

// Check asks ctnetlink for the table's global counters, one small request: whether the kernel
// has it and this process may use it, without reading a table that may hold many flows.
func (k *Kernel) Check() error {
	c, err := ct.Dial(nil)
	if err != nil {
		return fmt.Errorf("open ctnetlink: %w", err)
	}
	defer c.Close()
	if _, err := c.StatsGlobal(); err != nil {
		return fmt.Errorf("ask ctnetlink: %w", err)
	}
	return nil
}

// Watch follows the masqueraded flows (see the package's Watch).
func (k *Kernel) Watch(ctx context.Context, emit func(Record)) error { return Watch(ctx, 0, emit) }

// Snapshot returns the masqueraded flows (see the package's Snapshot).
func (k *Kernel) Snapshot() ([]Flow, error) { return Snapshot(0) }

// Install creates flows; one already there counts in existed. The error joins what failed.
func (k *Kernel) Install(flows []Flow) (installed, existed int, err error) {
	in, err := NewInstaller(0)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	var errs []error
	for _, f := range flows {
		switch err := in.Install(f); {
		case err == nil:
			installed++
		case errors.Is(err, unix.EEXIST):
			existed++
		default:
			if len(errs) < 3 {
				errs = append(errs, err)
			}
		}
	}
	if failed := len(flows) - installed - existed; failed > 0 {
		return installed, existed, fmt.Errorf("%d flows not installed: %w", failed, errors.Join(errs...))
	}
	return installed, existed, nil
}

// LocalAddr returns the first IPv4 address of the public interface.
func (k *Kernel) LocalAddr() (netip.Addr, bool) {
	if k.PublicInterface == "" {
		return netip.Addr{}, false
	}
	ifi, err := net.InterfaceByName(k.PublicInterface)
	if err != nil {
		return netip.Addr{}, false
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}
