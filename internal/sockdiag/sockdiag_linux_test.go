//go:build linux

package sockdiag

import (
	"maps"
	"net"
	"slices"
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

// TestPortFilter: the kernel itself passes only the sockets on the ports
// asked for — IPv4 and IPv6, one port, several, more than a byte's jump
// reaches, none — so that a machine's other connections cost nothing.
func TestPortFilter(t *testing.T) {
	type server struct {
		port uint16
		ino  uint64
	}
	var servers []server
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "[::1]:0" {
				t.Logf("no IPv6 here (%v): IPv4 only", err)
				continue
			}
			t.Fatal(err)
		}
		defer ln.Close()
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
		servers = append(servers, server{uint16(ln.Addr().(*net.TCPAddr).Port), inode(t, s)})
	}
	// Ports with nothing on them, to make the filter long: 40 blocks are
	// 800 bytes, past a forward jump that fits in a byte.
	padding := map[uint16]bool{}
	for p := uint16(1); len(padding) < 40; p++ {
		if !slices.ContainsFunc(servers, func(s server) bool { return s.port == p }) {
			padding[p] = true
		}
	}
	for _, tc := range []struct {
		name string
		want []int // indexes in servers
		pad  bool
	}{
		{"one port", []int{0}, false},
		{"two of three", []int{0, 2}, false},
		{"among 40 others", []int{1, len(servers) - 1}, true},
		{"none", nil, false},
	} {
		ports := map[uint16]bool{}
		if tc.pad {
			maps.Copy(ports, padding)
		}
		want := map[uint64]bool{}
		for _, i := range tc.want {
			ports[servers[i].port] = true
			want[servers[i].ino] = true
		}
		seen := map[uint64]bool{}
		err := dump(1<<tcpEstablished, portFilter(ports), func(port uint16, ino uint64, _ uint32, _ []byte) {
			if !ports[port] {
				t.Errorf("%s: the kernel passed a socket on port %d", tc.name, port)
			}
			seen[ino] = true
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !maps.Equal(seen, want) {
			t.Errorf("%s: sockets %v, want %v", tc.name, seen, want)
		}
	}
}
