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
		// http.Server looks for *tls.Conn by type; leave TLS alone. The
		// Drainer sees its close through the socket under it (connClosed).
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

// connUnwrapper is a connection that wraps another and says which, as
// *tls.Conn does with NetConn and trackedConn with Unwrap; a user's own
// wrapper should have one of these methods too.
type (
	netConner interface{ NetConn() net.Conn }
	unwrapper interface{ Unwrap() net.Conn }
)

// rawConn returns the socket under c, looking through every wrapper that
// says what it wraps (see netConner), or nil if it has none.
func rawConn(c net.Conn) syscall.RawConn {
	for range 64 { // a bound, in case a wrapper returns itself
		switch x := c.(type) {
		case netConner:
			c = x.NetConn()
			continue
		case unwrapper:
			c = x.Unwrap()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// connClosed reports whether c has been closed, by whoever holds it: for a
// trackedConn, from its Close; otherwise from the socket under it (see
// rawConn), which refuses any use once closed. seen is false when neither
// can be seen.
func connClosed(c net.Conn) (closed, seen bool) {
	if tc, ok := c.(*trackedConn); ok {
		return tc.closed.Load(), true
	}
	raw := rawConn(c)
	if raw == nil {
		return false, false
	}
	err := raw.Control(func(uintptr) {})
	return errors.Is(err, net.ErrClosed), true
}

// received returns how many bytes the kernel has received on c from its
// peer (TCP_INFO), whether or not the server has read them; ok is false
// where the kernel does not tell (Unix sockets).
func received(c net.Conn) (n uint64, ok bool) {
	raw := rawConn(c)
	if raw == nil {
		return 0, false
	}
	_ = raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n, ok = info.Bytes_received, true
		}
	})
	return n, ok
}

// shutIfQuiet sends the FIN on c, and reports true, unless a request may be
// on its way in: bytes wait unread in the kernel, or (when known, ok) the
// kernel has received bytes since it counted rcvd. The check and the
// shutdown(2) are one step. Closing through net.Conn.Close instead would
// leave the socket open until the server's goroutine reading c has woken and
// unwound — long enough, on a busy machine, for a client's request to arrive
// and be answered with a reset.
func shutIfQuiet(c net.Conn, rcvd uint64, ok bool) bool {
	raw := rawConn(c)
	if raw == nil {
		// A wrapper that hides its socket: the check cannot be made, and
		// the caller closes it as idle, the best that can be done.
		return true
	}
	shut := false
	_ = raw.Control(func(fd uintptr) {
		var buf [1]byte
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil && n > 0:
			return // a request waits
		case err != nil && !errors.Is(err, unix.EAGAIN):
			shut = true // reset or otherwise broken: nothing to lose
			return
		}
		// Nothing waits (EAGAIN), or the peer has closed its side (n == 0).
		if ok {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil || info.Bytes_received != rcvd {
				return // bytes came in since rcvd: the server may hold a request
			}
		}
		shut = unix.Shutdown(int(fd), unix.SHUT_WR) == nil
	})
	return shut
}
