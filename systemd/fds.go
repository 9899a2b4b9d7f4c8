package systemd

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// ErrBarrierTimeout is returned by Barrier when the service manager has not
// answered within the timeout.
var ErrBarrierTimeout = errors.New("systemd: BARRIER=1 not acknowledged in time")

// StoreFiles asks systemd to keep files in the unit's file descriptor store
// under name (FDSTORE=1, FDNAME=name), so that they survive a restart of the
// service and come back through socket activation with that name. The unit
// needs FileDescriptorStoreMax= greater than zero. A name holds at most 255
// printable ASCII characters and no colon.
func StoreFiles(name string, conns ...syscall.Conn) (bool, error) {
	if err := validFDName(name); err != nil {
		return false, err
	}
	return NotifyWithFiles("FDSTORE=1\nFDNAME="+name, conns...)
}

func validFDName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("systemd: fd name %q must be 1 to 255 characters long", name)
	}
	if strings.ContainsRune(name, ':') {
		return fmt.Errorf("systemd: fd name %q must not contain ':'", name)
	}
	for _, c := range name {
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("systemd: fd name %q must be printable ASCII", name)
		}
	}
	return nil
}
