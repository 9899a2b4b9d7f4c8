//go:build linux

package upgrader

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dupOf returns a duplicate of c's descriptor, as a new generation receives
// it, and closes c (the previous generation's copy).
func dupOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd, err = unix.Dup(int(s)) }); err != nil || fd < 0 {
		t.Fatalf("dup: %v", err)
	}
	return fd
}

// tcpPair returns the server's and the client's ends of a TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server.(*net.TCPConn), client.(*net.TCPConn)
}

func sockoptInt(t *testing.T, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, _ := c.SyscallConn()
	v := -1
	var gerr error
	_ = rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// An adopted TCP connection reads and writes as the one it was made from,
// keeps the socket options the previous generation set, and fails as a
// *net.TCPConn does: a timeout that is a net.Error, net.ErrClosed once
// closed, io.EOF at the peer's end.
func TestAdoptedConnTCP(t *testing.T) {
	server, client := tcpPair(t)
	// The previous generation's choices, unlike Go's defaults.
	if err := server.SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	if err := server.SetKeepAlive(false); err != nil {
		t.Fatal(err)
	}
	fd := dupOf(t, server)
	server.Close()
	c, err := adoptConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY); got != 0 {
		t.Errorf("TCP_NODELAY %d after adoption, want 0 as the previous generation set it", got)
	}
	if got := sockoptInt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 0 {
		t.Errorf("SO_KEEPALIVE %d after adoption, want 0 as the previous generation set it", got)
	}
	if c.LocalAddr().String() != client.RemoteAddr().String() || c.RemoteAddr().String() != client.LocalAddr().String() {
		t.Errorf("addresses %v ↔ %v, want %v ↔ %v", c.LocalAddr(), c.RemoteAddr(), client.RemoteAddr(), client.LocalAddr())
	}
	if _, ok := c.LocalAddr().(*net.TCPAddr); !ok {
		t.Errorf("LocalAddr is %T, want *net.TCPAddr", c.LocalAddr())
	}

	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf[:n], err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("client read %q, %v; want pong", buf[:n], err)
	}

	// A deadline passed: the error a *net.TCPConn gives.
	_ = c.SetReadDeadline(time.Now())
	_, err = c.Read(buf)
	var ne net.Error
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("read past the deadline: %T %v, want a net.Error that is a timeout", err, err)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) {
		t.Errorf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Net != "tcp" {
		t.Errorf("read past the deadline: %#v, want a *net.OpError of a tcp read", err)
	}
	_ = c.SetReadDeadline(time.Time{})

	// Half-close: the peer reads the end, and can still write.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(buf); err != io.EOF {
		t.Errorf("client read after CloseWrite: %v, want io.EOF", err)
	}
	if _, err := client.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "late" {
		t.Fatalf("read after CloseWrite %q, %v; want late", buf[:n], err)
	}
	client.Close()
	if _, err := c.Read(buf); err != io.EOF {
		t.Errorf("read after the peer closed: %v, want io.EOF", err)
	}

	if err := c.SetNoDelay(true); err != nil {
		t.Fatal(err)
	}
	if got := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY); got != 1 {
		t.Errorf("TCP_NODELAY %d after SetNoDelay(true)", got)
	}
	if err := c.SetKeepAlivePeriod(42 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != 42 {
		t.Errorf("TCP_KEEPIDLE %d after SetKeepAlivePeriod(42s)", got)
	}

	if err := c.SetKeepAlivePeriod(0); err != nil {
		t.Fatal(err)
	}
	if got := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != 15 {
		t.Errorf("TCP_KEEPIDLE %d after SetKeepAlivePeriod(0), want Go's default, 15", got)
	}
	if err := c.SetKeepAlivePeriod(-1); err != nil || sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE) != 15 {
		t.Errorf("SetKeepAlivePeriod(-1) changed TCP_KEEPIDLE, or failed: %v", err)
	}
	raddr := c.RemoteAddr()

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	for name, f := range map[string]func() error{
		"CloseWrite": c.CloseWrite, "SetNoDelay": func() error { return c.SetNoDelay(true) },
		"SyscallConn().Control": func() error {
			rc, err := c.SyscallConn()
			if err != nil {
				return err
			}
			return rc.Control(func(uintptr) {})
		},
	} {
		if err := f(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
	if c.RemoteAddr() == nil || c.RemoteAddr().String() != raddr.String() {
		t.Errorf("RemoteAddr after Close: %v, want %v still", c.RemoteAddr(), raddr)
	}
}

// A connection received on a low descriptor is moved above adoptedFdMin (3
// in a program: a process started with stdout or stderr closed receives
// its connections there, and os would end it with SIGPIPE at a write to a
// client that has gone). The test raises the bar rather than touch this
// process's stderr.
func TestAdoptedConnMovedUp(t *testing.T) {
	server, client := tcpPair(t)
	fd := dupOf(t, server)
	server.Close()
	defer func(old int) { adoptedFdMin = old }(adoptedFdMin)
	adoptedFdMin = fd + 100
	c, err := adoptConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.SyscallConn()
	_ = rc.Control(func(got uintptr) {
		if int(got) < adoptedFdMin {
			t.Errorf("the connection is on descriptor %d, want %d or more", got, adoptedFdMin)
		}
	})
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("the low descriptor %d is still open (%v)", fd, err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || n != 1 {
		t.Fatalf("read %d, %v", n, err)
	}
}

// A Unix stream connection is adopted with Unix addresses; a datagram
// socket and a pipe are refused, their descriptors closed.
func TestAdoptedConnKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := dupOf(t, server.(*net.UnixConn))
	server.Close()
	c, err := adoptConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := c.LocalAddr().(*net.UnixAddr); !ok || a.Name != path {
		t.Errorf("LocalAddr %#v, want the Unix address %s", c.LocalAddr(), path)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, err := c.Read(buf); err != nil || n != 1 {
		t.Fatalf("read %d, %v", n, err)
	}
	c.Close()

	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	ufd := dupOf(t, udp.(*net.UDPConn))
	if _, err := adoptConn(ufd); err == nil || !strings.Contains(err.Error(), "not a stream") {
		t.Errorf("a UDP socket: %v, want refused as not a stream", err)
	}
	if err := unix.Close(ufd); err != unix.EBADF {
		t.Errorf("the refused UDP socket's descriptor is still open (close: %v)", err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pfd, err := unix.Dup(int(r.Fd()))
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adoptConn(pfd); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a pipe: %v, want refused as not a socket", err)
	}
	if err := unix.Close(pfd); err != unix.EBADF {
		t.Errorf("the refused pipe's descriptor is still open (close: %v)", err)
	}
}

// BenchmarkAdopt compares making a connection of a received descriptor
// with adoptConn and with net.FileConn (what the new generation did
// before), per connection: each round adopts a duplicate of one TCP
// connection's descriptor and closes it.
func BenchmarkAdopt(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	rc, _ := server.(*net.TCPConn).SyscallConn()
	dup := func() int {
		fd := -1
		_ = rc.Control(func(s uintptr) { fd, _ = unix.Dup(int(s)) })
		if fd < 0 {
			b.Fatal("dup failed")
		}
		return fd
	}
	b.Run("adoptConn", func(b *testing.B) {
		for b.Loop() {
			c, err := adoptConn(dup())
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("net.FileConn", func(b *testing.B) {
		for b.Loop() {
			f := os.NewFile(uintptr(dup()), "x")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
