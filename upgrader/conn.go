package upgrader

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// trackedListener wraps a listener so that the Drainer can see when a
// connection last delivered bytes to the server.
type trackedListener struct {
	net.Listener
	d *Drainer
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, ok := c.(*tls.Conn); ok {
		// http.Server looks for *tls.Conn by type; leave TLS alone.
		return c, nil
	}
	return &trackedConn{Conn: c, d: l.d}, nil
}

// trackedConn records the time of its last successful read, and tells the
// Drainer when it is closed (which matters for hijacked connections).
type trackedConn struct {
	net.Conn
	d        *Drainer
	lastRead atomic.Int64 // UnixNano
	closed   atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *trackedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.d.forget(c)
	}
	return c.Conn.Close()
}

// ReadFrom keeps the kernel's sendfile/splice path for responses.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// CloseWrite lets http.Server half-close as it does with a *net.TCPConn.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Unwrap returns the underlying connection.
func (c *trackedConn) Unwrap() net.Conn { return c.Conn }

// readSince reports whether c delivered bytes to the server at or after t.
func readSince(c net.Conn, t time.Time) bool {
	tc, ok := c.(*trackedConn)
	return ok && tc.lastRead.Load() >= t.UnixNano()
}

// pending reports whether bytes wait unread in the kernel on c (a request
// the server has not read yet), or whether that cannot be told.
func pending(c net.Conn) bool {
	for {
		switch x := c.(type) {
		case *trackedConn:
			c = x.Conn
			continue
		case *tls.Conn:
			c = x.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false // closed already
	}
	var n int
	var perr error
	var buf [1]byte
	if err := raw.Control(func(fd uintptr) {
		n, _, perr = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	}); err != nil {
		return false
	}
	if errors.Is(perr, unix.EAGAIN) {
		return false
	}
	// n > 0: a request waits; n == 0 with no error: the peer closed.
	return perr == nil && n > 0
}
