//go:build unix && !(linux || freebsd || netbsd || openbsd || dragonfly)

package systemd

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// pipeCloexec and socketCloexec create descriptors and mark them
// close-on-exec under syscall.ForkLock, as the standard library does where
// the system has no flag for it (macOS): no process can be forked in
// between and inherit them.

func pipeCloexec() (r, w int, err error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return -1, -1, os.NewSyscallError("pipe", err)
	}
	unix.CloseOnExec(p[0])
	unix.CloseOnExec(p[1])
	return p[0], p[1], nil
}

func socketCloexec(domain, typ int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	s, err := unix.Socket(domain, typ, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	unix.CloseOnExec(s)
	return s, nil
}
