//go:build linux

package listener_test

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/listener"
)

// TestListenBindsPlainTCP: a fresh TCP listener is a plain TCP socket, as
// systemd's are, unless Config.MultipathTCP asks for Multipath TCP (which Go
// binds by default, and on which the kernel refuses a socket filter).
func TestListenBindsPlainTCP(t *testing.T) {
	protocol := func(ln net.Listener) int {
		t.Helper()
		rc, err := ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var p int
		var serr error
		if err := rc.Control(func(fd uintptr) { p, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PROTOCOL) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		return p
	}
	ln, err := listener.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if p := protocol(ln); p != syscall.IPPROTO_TCP {
		t.Errorf("bound a socket of protocol %d, want IPPROTO_TCP (%d)", p, syscall.IPPROTO_TCP)
	}
	a, _ := listener.Parse("127.0.0.1:0")
	c := listener.Config{MultipathTCP: true}
	mln, _, err := c.Listen(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer mln.Close()
	const ipprotoMPTCP = 262
	if p := protocol(mln); p != ipprotoMPTCP && p != syscall.IPPROTO_TCP { // TCP where the kernel lacks MPTCP
		t.Errorf("MultipathTCP: bound a socket of protocol %d", p)
	}
}
