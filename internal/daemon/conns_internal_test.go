//go:build linux

package daemon

import (
	"net"
	"os"
	"testing"
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
	conns, err := tcpConns(map[uint16]bool{port: true})
	if err != nil {
		t.Fatal(err)
	}
	mine := socketInodes([]int{os.Getpid()})
	var found []connInfo
	for ino, ci := range conns {
		if mine[ino] {
			found = append(found, ci)
		}
	}
	// The accepted side only: the client's local port is another.
	if len(found) != 1 || found[0].segsIn != 1 || found[0].segsOut != 0 {
		t.Fatalf("accepted connection: %+v (all on the port: %+v)", found, conns)
	}
	if _, err := s.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	// The answer is counted once sent: wait for the client to read it.
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	conns, _ = tcpConns(map[uint16]bool{port: true})
	for ino, ci := range conns {
		if mine[ino] && (ci.segsOut != 1 || ci.pending(0)) {
			t.Errorf("after the answer: %+v", ci)
		}
	}
}
