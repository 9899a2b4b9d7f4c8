package upgrader

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// This file moves idle HTTP/1.1 keep-alive connections to the new
// generation (Options.MoveIdleConns). The old generation's drain stops the
// server's read of each idle connection (drain.Drainer.MoveIdle) and offers
// it through the Handover with a state that names its listener's address;
// the new generation's Handover routes it to its listener of that address,
// whose Accept returns it as if it had just been accepted.

// idleStatePrefix begins the state of an idle HTTP connection moved by the
// Upgrader; the listener's address follows.
const idleStatePrefix = "\x00handoff:http-idle\x00"

func idleState(key string) []byte { return []byte(idleStatePrefix + key) }

// idleKey returns the listener's address in the state of a moved idle
// HTTP connection; ok is false for any other state.
func idleKey(state []byte) (key string, ok bool) {
	if !bytes.HasPrefix(state, []byte(idleStatePrefix)) {
		return "", false
	}
	return string(state[len(idleStatePrefix):]), true
}

// idleListen returns ln as it is, or, with MoveIdleConns and a TCP
// listener, wrapped so that its connections can be offered, and so that
// idle connections moved from the previous generation come out of its
// Accept.
func (u *Upgrader) idleListen(ln net.Listener) net.Listener {
	tl, ok := ln.(*net.TCPListener)
	if !u.opts.MoveIdleConns || !ok {
		return ln
	}
	l := &idleListener{TCPListener: tl, key: tl.Addr().String()}
	u.hoMu.Lock()
	if u.idleLns == nil {
		u.idleLns = map[string]*idleListener{}
	}
	u.idleLns[l.key] = l
	u.hoMu.Unlock()
	return l
}

// adoptIdle makes the Handover, unless the program made its own, so that
// the new generation says it adopts: an OnReady hook.
func (u *Upgrader) adoptIdle() error {
	u.handover(HandoverOptions{}, true)
	return nil
}

// check is the new generation's look at a connection offered: an idle
// HTTP connection needs an open listener of its address; other states are
// the program's to check, if it made the Handover.
func (h *Handover) check(state []byte) error {
	if key, ok := idleKey(state); ok {
		h.u.hoMu.Lock()
		l := h.u.idleLns[key]
		h.u.hoMu.Unlock()
		if l == nil || l.isClosed() {
			return fmt.Errorf("no listener of %s takes idle HTTP connections here (Options.MoveIdleConns unset, or the address changed)", key)
		}
		return nil
	}
	if h.internal {
		return errors.New("this generation adopts idle HTTP connections only (it did not call Handover)")
	}
	if h.opts.Check != nil {
		if err := h.opts.Check(state); err != nil {
			return fmt.Errorf("Check: %w", err)
		}
	}
	return nil
}

// takeIdle hands an idle HTTP connection adopted from the previous
// generation to the listener of its address, which returns it from Accept.
func (u *Upgrader) takeIdle(key string, c net.Conn) {
	u.hoMu.Lock()
	l := u.idleLns[key]
	u.hoMu.Unlock()
	if hc, ok := c.(*hoConn); ok {
		hc.key = key // it can move again at the next release
	}
	if l == nil || !l.push(c) {
		// Checked before it was prepared; the listener closed since: this
		// generation is stopping.
		c.Close()
		u.log.Warn("an idle HTTP connection adopted after its listener closed: closed", "event", "handover.idle_closed", "addr", key)
	}
}

// moveIdle is the Drainers' MoveIdle function: it offers an idle HTTP
// connection to the new generation, and reports whether it moved.
func (u *Upgrader) moveIdle(c net.Conn) bool {
	key := idleKeyOf(c)
	if key == "" {
		return false
	}
	u.hoMu.Lock()
	h := u.ho
	u.hoMu.Unlock()
	if h == nil {
		return false
	}
	return h.Offer(c, idleState(key), nil) == nil
}

// idleKeyOf returns the key of the tracked connection under c's wrappers,
// or "" if it came from no listener that takes idle connections.
func idleKeyOf(c net.Conn) string {
	key := ""
	layers(c, false, func(x net.Conn) bool {
		if hc, ok := x.(*hoConn); ok {
			key = hc.key
		}
		return key == ""
	})
	return key
}

// idleListener is a TCP listener whose Accept also returns the idle HTTP
// connections moved from the previous generation, first, and whose
// connections are tracked (hoConn) so that they can move on.
type idleListener struct {
	*net.TCPListener
	key string

	mu     sync.Mutex
	queue  []net.Conn // adopted, not yet returned by Accept
	closed bool
	// kicked: push put the socket's deadline in the past, to wake an
	// Accept; deadline is the one the caller set, restored after.
	kicked   bool
	deadline time.Time
}

// Accept returns an adopted connection if one waits, else the socket's
// next connection.
func (l *idleListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		c, err := l.TCPListener.Accept()
		l.mu.Lock()
		kicked := l.kicked
		if kicked {
			l.kicked = false
			_ = l.TCPListener.SetDeadline(l.deadline)
		}
		l.mu.Unlock()
		if err != nil {
			var ne net.Error
			if kicked && errors.As(err, &ne) && ne.Timeout() {
				continue // woken for an adopted connection
			}
			return nil, err
		}
		return &hoConn{Conn: c, key: l.key}, nil
	}
}

// push queues an adopted connection for Accept and wakes an Accept in
// progress; false if the listener is closed.
func (l *idleListener) push(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, c)
	l.kicked = true
	_ = l.TCPListener.SetDeadline(time.Unix(1, 0))
	return true
}

// SetDeadline sets the deadline of Accept, as net.TCPListener's does.
func (l *idleListener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = t
	if l.kicked {
		return nil // restored by the Accept that push woke
	}
	return l.TCPListener.SetDeadline(t)
}

// Close closes the socket, and the adopted connections no Accept took.
func (l *idleListener) Close() error {
	l.mu.Lock()
	l.closed = true
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range q {
		c.Close()
	}
	return l.TCPListener.Close()
}

func (l *idleListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
