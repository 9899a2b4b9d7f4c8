package systemd

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrBarrierTimeout is returned by Barrier when the service manager has not
// answered within the timeout.
var ErrBarrierTimeout = errors.New("systemd: BARRIER=1 not acknowledged in time")

// StoreFiles asks systemd to keep files in the unit's file descriptor store
// under name (FDSTORE=1, FDNAME=name), so that they survive a restart of the
// service and come back through socket activation with that name. The unit
// needs FileDescriptorStoreMax= greater than zero. name must pass
// CheckFDName.
func StoreFiles(name string, conns ...syscall.Conn) (bool, error) {
	if err := CheckFDName(name); err != nil {
		return false, err
	}
	return NotifyWithFiles("FDSTORE=1\nFDNAME="+name, conns...)
}

// CheckFDName returns nil if name can be a socket's FileDescriptorName=, and
// so an entry of LISTEN_FDNAMES or an FDNAME=: 1 to 255 ASCII characters,
// none of them a control character or ':' (systemd.socket(5)). It is the one
// rule handoff applies to such names, wherever they come from.
func CheckFDName(name string) error {
	switch {
	case name == "":
		return errors.New("systemd: empty fd name")
	case len(name) > 255:
		return fmt.Errorf("systemd: fd name %.20q… is %d characters long; the limit is 255", name, len(name))
	}
	for _, c := range name {
		if c < 0x20 || c >= 0x7f || c == ':' {
			return fmt.Errorf("systemd: fd name %q must be ASCII, without control characters and without ':'", name)
		}
	}
	return nil
}
