package drain

import (
	"errors"
	"net"
	"net/http"
	"os"
	"time"
)

// This file moves idle HTTP/1.1 connections out of the Drainer (MoveIdle):
// the server's goroutine is held in its Read, having consumed nothing of the
// next request, while another owner (the next generation, see package
// upgrader) takes the connection; then it either returns as from a closed
// connection, or reads on as if nothing had happened.
//
// A connection is idle when net/http waits for its next request with
// nothing of it read: its ConnState is StateIdle (or StateNew), nothing was
// read since it said so, and its Read is one of net/http's whole read
// buffer. The last condition rules out what net/http holds from before it
// said so: a pipelined request in its buffer, or the byte its background
// read takes during a request (net/http then reads the rest into what is
// left of the buffer). net/http makes the first Read of a connection one of
// its whole buffer, which is how its length is known.

// MoveIdle registers f to take the idle HTTP/1.1 connections of the drain
// instead of closing them. From the drain's start on, each connection that
// is idle — served as plain HTTP/1.1 (not TLS, HTTP/2 or hijacked), its
// server waiting for its next request with no byte of it read — is given
// to f, in a goroutine of its own, once its server's read has been
// stopped without consuming a byte: bytes the client sends meanwhile stay
// in the kernel's buffer. f gets the connection the listener given to
// Serve returned (under the Drainer's own tracking), its read deadline in
// the past: f sets one of its own before it reads. f owns the connection
// while it runs; nothing else reads or writes it.
//
//	true:  f took the connection (it moved it elsewhere or closed it). The
//	       server's read returns as from a closed connection; its
//	       ConnState reports StateClosed; Stats.Moved counts it.
//	false: f left it untouched. The server reads on as if nothing had
//	       happened, and the drain treats the connection as it would have
//	       without MoveIdle (closed once idle for the idle grace, or
//	       served with "Connection: close" if a request comes); f is not
//	       called for it again.
//
// A connection not idle when looked at (a request arriving, a pipelined one
// buffered) is looked at again at the drain's next look (every 50 ms at
// most) while its ConnState says idle. Call MoveIdle before Drain; nil
// turns it off. Whether a connection is idle is read from how net/http
// reads it (see move.go), as it does in Go 1.26 and 1.27.
func (d *Drainer) MoveIdle(f func(c net.Conn) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mover = f
}

// holdWait bounds how long a move waits for the server's Read to return
// once its deadline is in the past (at once, on a socket).
const holdWait = time.Second

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// readStop is a move's stop of the server's read of one connection.
type readStop struct {
	// done is closed once the reader is held (held, under the
	// connection's mu) or has returned with what it read.
	done chan struct{}
	held bool
	// decision is the move's outcome for a held reader: true, the
	// connection was taken.
	decision chan bool
}

// moveIdle starts a move of each connection that looks idle and was not
// offered yet. It does nothing without MoveIdle.
func (d *Drainer) moveIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.mover
	if f == nil {
		return
	}
	for c, ci := range d.conns {
		if ci.moving || ci.offered || ci.closing || ci.h2 != nil || (ci.state != http.StateIdle && ci.state != http.StateNew) {
			continue
		}
		tc, ok := c.(*trackedConn)
		if !ok || !tc.idleRead() {
			continue
		}
		ci.moving = true
		go d.move(tc, f)
	}
}

// move holds tc's reader, gives the connection to f, and lets the reader
// go with f's outcome.
func (d *Drainer) move(tc *trackedConn, f func(net.Conn) bool) {
	st := tc.holdRead()
	moved := false
	if st != nil {
		moved = f(tc.Conn)
		tc.moved.Store(moved)
	}
	// Counted before the reader goes: once it has, the connection is
	// reported closed, and the drain may end.
	d.mu.Lock()
	if ci := d.conns[tc]; ci != nil {
		ci.moving = false
		ci.offered = st != nil
		ci.closing = moved // gone: its server reports it closed shortly
	}
	if moved {
		d.moved++
	}
	d.mu.Unlock()
	if st != nil {
		st.decision <- moved
	}
	d.signal()
}

// idleRead reports whether the server waits in a Read of its whole buffer
// with nothing read since it reported the connection idle.
func (c *trackedConn) idleRead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reading && c.stop == nil && !c.dirty && c.readLen == c.firstLen && !c.closed.Load()
}

// markIdle records that the server reported the connection idle: what it
// reads from here on belongs to its next request.
func (c *trackedConn) markIdle() {
	c.mu.Lock()
	c.dirty = false
	c.mu.Unlock()
}

// holdRead stops the server's Read of c if it is idle (see idleRead): it
// puts the read deadline in the past, and returns once the Read has
// returned — held, it then waits for the stop's decision — or nil if the
// connection is not idle, or bytes came before the Read returned (the
// server has them, and goes on with its request).
func (c *trackedConn) holdRead() *readStop {
	c.mu.Lock()
	if !(c.reading && c.stop == nil && !c.dirty && c.readLen == c.firstLen && !c.closed.Load()) {
		c.mu.Unlock()
		return nil
	}
	st := &readStop{done: make(chan struct{}), decision: make(chan bool, 1)}
	c.stop = st
	if err := c.Conn.SetReadDeadline(aLongTimeAgo); err != nil {
		c.stop = nil
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	t := time.NewTimer(holdWait)
	defer t.Stop()
	select {
	case <-st.done:
	case <-t.C:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.held {
		return st
	}
	if c.stop == st {
		// The Read did not return in time: give up, and let it read on
		// (afterRead takes the timeout for what it is).
		c.stop = nil
		c.stale = true
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
	return nil
}

// afterRead is called by Read with what the underlying Read returned: it
// reports whether to read again (a stop ended without a move), else what
// Read returns. A held reader waits here for the stop's decision.
func (c *trackedConn) afterRead(n int, err error) (again bool, _ int, _ error) {
	c.mu.Lock()
	if n > 0 {
		c.dirty = true
	}
	// A timeout the server's own deadline cannot explain is a stop's.
	timeout := n == 0 && errors.Is(err, os.ErrDeadlineExceeded)
	ours := timeout && (c.deadline.IsZero() || time.Now().Before(c.deadline))
	st, stale := c.stop, c.stale
	c.stale = false
	switch {
	case st != nil && ours:
		st.held = true
		close(st.done)
		c.mu.Unlock()
		moved := <-st.decision
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stop = nil
		if moved {
			c.reading = false
			return false, 0, c.movedErr("read")
		}
		_ = c.Conn.SetReadDeadline(c.deadline)
		return true, 0, nil
	case st != nil:
		// Bytes came, or the read failed, before the stop: no move.
		c.stop = nil
		_ = c.Conn.SetReadDeadline(c.deadline)
		close(st.done)
	case stale && ours:
		// The timeout of a stop that gave up: the deadline is restored.
		c.mu.Unlock()
		return true, 0, nil
	}
	c.reading = false
	c.mu.Unlock()
	return false, n, err
}

// movedErr is what the server's Read and Write get once the connection
// was moved: a read error net/http takes for a closed connection and ends
// the connection on quietly. (A bare net.ErrClosed made it answer a
// connection still in StateNew with "400 Bad Request", written to the
// socket the mover now owns.)
func (c *trackedConn) movedErr(op string) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
}
