package drain

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// trackedListener wraps a listener so that the Drainer can see when a
// connection last delivered bytes to the server.
type trackedListener struct {
	net.Listener
	d *Drainer
	// closed is closed by Close, so that an Accept held by a pause returns.
	closed    chan struct{}
	closeOnce sync.Once
	// interrupted: Pause cut the Accept in progress short with a deadline,
	// which the next Accept clears.
	interrupted atomic.Bool
	// amu guards accepting and settled.
	amu sync.Mutex
	// accepting is set while an Accept of the listener is under way, or
	// about to be: Pause waits until it is not.
	accepting bool
	// settled, when not nil, is closed as accepting turns false: a Pause
	// waits on it.
	settled chan struct{}
}

// setAccepting records whether an Accept is under way, and wakes a Pause
// that waits for it to end.
func (l *trackedListener) setAccepting(on bool) {
	l.amu.Lock()
	l.accepting = on
	if !on && l.settled != nil {
		close(l.settled)
		l.settled = nil
	}
	l.amu.Unlock()
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		if err := l.d.waitResumed(l.closed); err != nil {
			return nil, err
		}
		if l.interrupted.Swap(false) {
			// A pause cut an Accept short, or began since waitResumed
			// returned: clear its deadline, and look at the pause again
			// before accepting, or this Accept would take a connection
			// while paused.
			setDeadline(l.Listener, time.Time{})
			continue
		}
		// Say so before looking at the pause once more: a Pause that has
		// begun is seen here, or waits for this Accept to return.
		l.setAccepting(true)
		if l.d.Paused() {
			l.setAccepting(false)
			continue
		}
		c, err := l.Listener.Accept()
		if err != nil {
			l.setAccepting(false)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && (l.interrupted.Load() || l.d.Paused()) {
				continue // cut short by Pause
			}
			return nil, err
		}
		l.d.accepted.Add(1)
		tc := l.track(c)
		// Counted before the Accept is over, for a drain that begins
		// meanwhile: it waits for the Accepts under way (waitAccepts),
		// then for every connection counted.
		l.d.noteAccepted(tc)
		l.setAccepting(false)
		return tc, nil
	}
}

// Close closes the listener, and ends an Accept that a pause holds.
func (l *trackedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// interrupt makes an Accept in progress return (to wait for the pause to
// end) where the listener has deadlines; a TLS listener has none, and its
// Accept in progress takes one more connection.
func (l *trackedListener) interrupt() {
	l.interrupted.Store(true)
	setDeadline(l.Listener, time.Now())
}

// settle waits, up to settleMax, until no Accept of l is under way, where
// the listener has deadlines: interrupt's deadline cuts a parked Accept
// short, but not at once, and a connection that comes meanwhile may still
// be taken before it returns. Once settled, the pause holds. It is woken as
// the Accept returns: a sleep between looks would cost a millisecond at
// least (the runtime's timers sleep in whole milliseconds when idle), and
// an upgrade waits on this pause.
func (l *trackedListener) settle() {
	if _, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); !ok {
		return
	}
	ch := l.acceptDone()
	if ch == nil {
		return
	}
	t := time.NewTimer(settleMax)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// acceptDone returns a channel closed once the Accept of l under way has
// returned — having counted with the Drainer the connection it took, if
// any — or nil if none is under way.
func (l *trackedListener) acceptDone() <-chan struct{} {
	l.amu.Lock()
	defer l.amu.Unlock()
	if !l.accepting {
		return nil
	}
	if l.settled == nil {
		l.settled = make(chan struct{})
	}
	return l.settled
}

// settleMax bounds how long Pause waits for an Accept in progress.
const settleMax = 100 * time.Millisecond

func setDeadline(ln net.Listener, t time.Time) {
	if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		_ = dl.SetDeadline(t)
	}
}

func (l *trackedListener) track(c net.Conn) net.Conn {
	if _, ok := c.(*tls.Conn); ok {
		// http.Server looks for *tls.Conn by type; leave TLS alone. The
		// Drainer sees its close through the socket under it (connClosed).
		return c
	}
	return &trackedConn{Conn: c, d: l.d}
}

// trackedConn records the time of its last successful read, and tells the
// Drainer when it is closed (which matters for hijacked connections). It
// also lets a move (see move.go) stop the server's read of an idle
// connection without consuming a byte: the fields under mu.
type trackedConn struct {
	net.Conn
	d        *Drainer
	lastRead atomic.Int64 // UnixNano
	closed   atomic.Bool
	// moved: a MoveIdle function took the connection; it is no longer
	// this server's to close.
	moved atomic.Bool

	mu sync.Mutex
	// reading: the server is in Read, with a buffer of readLen bytes;
	// firstLen is the length of its first Read's buffer, which net/http
	// makes into its whole, empty, read buffer.
	reading           bool
	readLen, firstLen int
	// dirty: bytes were read since the server last reported the
	// connection idle.
	dirty bool
	// deadline is the read deadline the server set, which a stop
	// overrides until it ends.
	deadline time.Time
	// stop is the stop in progress, if any; stale: one gave up before
	// the Read returned, whose timeout is then its.
	stop  *readStop
	stale bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.firstLen == 0 {
		c.firstLen = len(p)
	}
	c.reading, c.readLen = true, len(p)
	c.mu.Unlock()
	for {
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.lastRead.Store(time.Now().UnixNano())
		}
		if again, n, err := c.afterRead(n, err); !again {
			return n, err
		}
		// A stop ended without a move: read on as if nothing happened.
	}
}

// SetReadDeadline sets the server's read deadline; while a stop holds the
// read, it takes effect once the stop ends.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.stop != nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one as SetReadDeadline does.
func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *trackedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.d.forget(c)
	}
	if c.moved.Load() {
		return nil // the mover's now
	}
	return c.Conn.Close()
}

// Write writes to the connection, unless it was moved (see MoveIdle): its
// server has nothing more to say on it.
func (c *trackedConn) Write(p []byte) (int, error) {
	if c.moved.Load() {
		return 0, c.movedErr("write")
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel's sendfile/splice path for responses.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if c.moved.Load() {
		return 0, c.movedErr("write")
	}
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

// netConner and unwrapper are connections that wrap another and say which,
// as *tls.Conn does with NetConn and trackedConn with Unwrap; a user's own
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
