//go:build linux

// Package sockets opens the sockets `handoff run` passes to its program:
// each through the upgrader, so that a new handoff inherits it, and each
// as a descriptor that can be passed to a process without changing the
// socket that every process shares (Passable).
package sockets

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/listener"
	"github.com/handoff-dev/handoff/upgrader"
)

// Open opens a through u, so that a new handoff inherits it (SIGUSR2), and
// returns a descriptor to pass to the program's processes (see Passable)
// and the listener or packet conn, which the caller keeps open as long as
// it passes the socket on. Errors name the address.
func Open(u *upgrader.Upgrader, a listener.Addr) (*os.File, io.Closer, error) {
	var c io.Closer
	if a.Packet() {
		pc, err := u.ListenPacketAddr(a)
		if err != nil {
			return nil, nil, err
		}
		c = pc
	} else {
		ln, err := u.ListenAddr(a)
		if err != nil {
			return nil, nil, err
		}
		c = ln
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		c.Close()
		return nil, nil, fmt.Errorf("handoff: %s: cannot pass this socket on", a)
	}
	file, err := Passable(sc, a.String())
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("handoff: %s: %w", a, err)
	}
	return file, c, nil
}

// Passable returns a duplicate of the socket for exec.Cmd.ExtraFiles that
// leaves the socket in non-blocking mode. All generations share one open
// file description, and with it its O_NONBLOCK flag. The *os.File of
// net's File method makes os.StartProcess clear that flag (golang/go#43894):
// an older generation's Go runtime then blocks in accept(2) in the kernel,
// and its listener's Close waits until a connection arrives — a drain with
// no traffic hangs until the drain timeout. A descriptor that was already
// non-blocking when given to os.NewFile is passed as it is.
func Passable(sc syscall.Conn, name string) (*os.File, error) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := raw.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	return os.NewFile(uintptr(dup), name), nil
}

// LocalAddr returns the address a listener or packet conn is bound to, or
// nil for anything else.
func LocalAddr(c io.Closer) net.Addr {
	switch x := c.(type) {
	case net.Listener:
		return x.Addr()
	case net.PacketConn:
		return x.LocalAddr()
	}
	return nil
}
