//go:build linux || freebsd || netbsd || openbsd || dragonfly

package systemd

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeCloexec and socketCloexec create descriptors that are close-on-exec
// from the start, in one system call, where the system can.

func pipeCloexec() (r, w int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, -1, os.NewSyscallError("pipe2", err)
	}
	return p[0], p[1], nil
}

func socketCloexec(domain, typ int) (int, error) {
	s, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return s, nil
}
