package datapath

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// checkInterface returns "" when the interface exists, is administratively up and its
// operational state is up (IFF_RUNNING, which the kernel sets for oper state "up" and
// "unknown"), and a reason otherwise. One ioctl; no dump of every link.
func checkInterface(name string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Sprintf("cannot query interface %s: %v", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Sprintf("cannot query interface %s: %v", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return fmt.Sprintf("interface %s does not exist", name)
		}
		return fmt.Sprintf("cannot query interface %s: %v", name, err)
	}
	flags := ifr.Uint16()
	switch {
	case flags&unix.IFF_UP == 0:
		return fmt.Sprintf("interface %s is down", name)
	case flags&unix.IFF_RUNNING == 0:
		return fmt.Sprintf("interface %s is down (no carrier)", name)
	}
	return ""
}
