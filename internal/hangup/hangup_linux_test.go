package hangup

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Peer is false while both ends are open, true once the peer has closed,
// and true for a closed connection.
func TestPeer(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "end")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	if _, err := b.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	if Peer(a) {
		t.Fatal("Peer is true while the other end is open")
	}
	b.Close()
	if !Peer(a) {
		t.Fatal("Peer is false once the other end has closed")
	}
	a.Close()
	if !Peer(a) {
		t.Fatal("Peer is false for a closed connection")
	}
}
