//go:build unix

package listener

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// sockType returns SO_TYPE of f, or -1.
func sockType(f *os.File) int {
	t := -1
	control(f, func(fd int) {
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err == nil {
			t = v
		}
	})
	return t
}

// sockName returns the local address of the socket f — a *net.UnixAddr, or
// a *net.TCPAddr for any IP socket — or nil.
func sockName(f *os.File) net.Addr {
	var sa unix.Sockaddr
	control(f, func(fd int) { sa, _ = unix.Getsockname(fd) })
	switch s := sa.(type) {
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: s.Name, Net: "unix"}
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(s.Addr[:]), Port: s.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(s.Addr[:]), Port: s.Port}
	}
	return nil
}

func control(f *os.File, fn func(fd int)) {
	raw, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { fn(int(fd)) })
}
