package holdback

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenTCP listens on a loopback port as handoff does: without Multipath
// TCP, whose listeners take no socket filter.
func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// queue opens n connections to ln that nobody accepts yet, and waits until
// the kernel has them all queued.
func queue(t *testing.T, network, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.Dial(network, addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// TestHoldTCP: once held back, a TCP socket completes no new handshake,
// Queued counts what waits in it until it is accepted, and the connections
// accepted then are served — none is reset.
func TestHoldTCP(t *testing.T) {
	ln := listenTCP(t)
	addr := ln.Addr().String()
	cs := queue(t, "tcp", addr, 5)
	var s Set
	if err := s.Hold(ln); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
	if q, err := s.Queued(); err != nil || q != 5 {
		t.Fatalf("Queued = %d, %v; want the 5 connections not yet accepted", q, err)
	}
	// A new SYN is dropped: the connect does not complete. (Were it
	// answered, the loopback connect would complete at once.)
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a connection was completed on a held-back socket")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connect to a held-back socket: %v, want a timeout (SYN dropped)", err)
	}
	// The handshakes already done are served.
	for i := range cs {
		sc, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		sc.Write([]byte("ok"))
		sc.Close()
	}
	if q, err := s.Wait(5 * time.Second); err != nil || q != 0 {
		t.Fatalf("Wait = %d, %v; want 0 once every connection is accepted", q, err)
	}
	ln.Close()
	for i, c := range cs {
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "ok" {
			t.Fatalf("client %d read %q, %v; want its answer, then EOF", i, b, err)
		}
	}
	// Once the socket is closed, a connect is refused.
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect once closed: %v, want ECONNREFUSED", err)
	}
}

// TestHoldUnix: a held-back Unix socket's file is gone, so a new connect
// fails at once, and what queued before is counted until accepted.
func TestHoldUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cs := queue(t, "unix", path, 3)
	var s Set
	if err := s.Hold(ln); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket's file after Hold: %v, want it removed", err)
	}
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("connect to a held-back Unix socket: %v, want ENOENT", err)
	}
	if q, err := s.Queued(); err != nil || q != 3 {
		t.Fatalf("Queued = %d, %v; want 3", q, err)
	}
	for range cs {
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		sc.Close()
	}
	if q, err := s.Queued(); err != nil || q != 0 {
		t.Fatalf("Queued = %d, %v; want 0 once accepted", q, err)
	}
}

// TestHoldUnixNotItsFile: a path that a newer socket took is left alone.
func TestHoldUnixNotItsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	os.Remove(path)
	newer, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	var s Set
	if err := s.Hold(old); err == nil {
		t.Fatal("Hold removed, or claimed to remove, a newer socket's file")
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the newer socket's file: %v, want it in place", err)
	}
}

// TestHoldMultipathTCP: a Multipath TCP listener cannot be held back, and
// the error says why.
func TestHoldMultipathTCP(t *testing.T) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var s Set
	err = s.Hold(ln)
	if err == nil {
		t.Skip("this kernel gave a plain TCP listener (no MPTCP)")
	}
	if !strings.Contains(err.Error(), "Multipath TCP") {
		t.Fatalf("Hold on an MPTCP listener: %v, want an error naming Multipath TCP", err)
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d after a failed Hold, want 0", s.Len())
	}
}

// TestDetachFilter: a socket held back and then detached takes connections
// again; detaching where there is no filter is no error.
func TestDetachFilter(t *testing.T) {
	ln := listenTCP(t)
	tl := ln.(*net.TCPListener)
	if err := DetachFilter(tl); err != nil {
		t.Fatalf("DetachFilter without a filter: %v", err)
	}
	var s Set
	if err := s.Hold(ln); err != nil {
		t.Fatal(err)
	}
	if err := DetachFilter(tl); err != nil {
		t.Fatalf("DetachFilter: %v", err)
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("connect once detached: %v", err)
	}
	c.Close()
}
