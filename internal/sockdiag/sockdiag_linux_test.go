//go:build linux

package sockdiag

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTCPConns: sock_diag lists an accepted connection on the port by its
// inode, with the data it received and sent.
func TestTCPConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := s.Read(buf); err != nil {
		t.Fatal(err)
	}
	conns, err := TCPConns(map[uint16]bool{port: true})
	if err != nil {
		t.Fatal(err)
	}
	mine := map[uint64]bool{inode(t, s): true}
	var found []Conn
	for ino, ci := range conns {
		if mine[ino] {
			found = append(found, ci)
		}
	}
	// The accepted side only: the client's local port is another.
	if len(found) != 1 || found[0].SegsIn != 1 || found[0].SegsOut != 0 {
		t.Fatalf("accepted connection: %+v (all on the port: %+v)", found, conns)
	}
	if _, err := s.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	// The answer is counted once sent: wait for the client to read it.
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	conns, _ = TCPConns(map[uint16]bool{port: true})
	for ino, ci := range conns {
		if mine[ino] && (ci.SegsOut != 1 || ci.Pending(0)) {
			t.Errorf("after the answer: %+v", ci)
		}
	}
}

// inode returns the inode of c's socket.
func inode(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return st.Ino
}

// TestAcceptQueues: connections that no one accepts are counted in the
// accept queue of their listening socket, TCP and Unix, and a Unix
// listener reports the file it is bound to.
func TestAcceptQueues(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := t.TempDir() + "/s.sock"
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	lnIno, ulIno := listenerInode(t, ln), listenerInode(t, ul)
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		u, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
	}
	if n, err := AcceptQueue(map[uint64]bool{lnIno: true}); err != nil || n != 2 {
		t.Errorf("TCP accept queue: %d, %v; want 2", n, err)
	}
	ls, err := UnixListeners(map[uint64]bool{ulIno: true})
	var st unix.Stat_t
	if serr := unix.Stat(path, &st); serr != nil {
		t.Fatal(serr)
	}
	if err != nil || ls[ulIno].Queued != 2 || ls[ulIno].VFSIno != st.Ino {
		t.Errorf("Unix listener: %+v, %v; want 2 queued, bound to inode %d", ls, err, st.Ino)
	}
	if n, err := UnixAcceptQueue(map[uint64]bool{ulIno: true}); err != nil || n != 2 {
		t.Errorf("Unix accept queue: %d, %v; want 2", n, err)
	}
}

// listenerInode returns the inode of ln's socket.
func listenerInode(t *testing.T, ln net.Listener) uint64 {
	t.Helper()
	sc, ok := ln.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		t.Fatalf("%T has no SyscallConn", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return st.Ino
}
