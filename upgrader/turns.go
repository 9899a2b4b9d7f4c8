package upgrader

import (
	"cmp"
	"container/list"
	"crypto/tls"
	"net"
	"slices"
	"sync/atomic"
	"time"
)

// Turns pace a handover: rather than every connection stopping at once and
// waiting for the whole handover (with 10,000 connections, seconds without
// an answer), each stops when its turn comes, and the others are served on
// meanwhile. See OnTurn.

// turnMode is where a Handover's turns are.
type turnMode uint8

const (
	turnsNotBegun turnMode = iota // this generation serves
	turnsPaced                    // it hands over: a few at a time
	turnsAll                      // it stops without handing over: all at once
)

// turn is one connection's place in the turns (see OnTurn).
type turn struct {
	h    *Handover
	c    *hoConn // nil for a connection Offer cannot take: it takes no slot
	f    func()
	elem *list.Element // in h.waiting while it waits
	// queued is elem != nil, for a look without h.tmu (see read).
	queued atomic.Bool
	// active: its f was called and its slot is taken, until end.
	active bool
	timer  *time.Timer
}

// OnTurn arranges for f to be called, in a goroutine of its own, when it is
// c's turn to stop its reader and be offered, and returns a function that
// cancels that if the turn has not come yet (it then reports true), or ends
// the turn if it has. Register each connection once, where it starts being
// served (after Accept, or on adoption); call stop when its serving ends.
//
// Once this generation hands over (HandedOver is true; in library mode,
// when Exit is closed), the connections registered get their turns no more
// than HandoverOptions.Turns at once, the rest served on meanwhile, so that
// each connection pauses only for its own batch, not for the whole
// handover. They get them by their last read that emptied the socket (a
// Read through the tracked connection that returned less than it asked
// for), the latest first: having just taken in all the client sent, a
// connection is, in most protocols, the furthest from the client's next
// message, and its pause falls where the client waits anyway. One that
// reads so while it waits goes to the front; those that never did, and
// those not tracked, come last, in the order they registered. A connection
// streaming a long message, whose reads fill the buffer, keeps its place.
// A turn ends, and the next begins, when Offer(c) returns, when c is
// closed, or after HandoverOptions.Timeout.
// When this generation stops without handing over (library mode: Exit is
// closed and HandedOver is false), f is called for every connection at once;
// and so it is for the connections still waiting HandoverOptions.HurryAfter
// after the handover began (by default, in library mode, half
// Options.DrainTimeout; logged as handover.hurried), so that none is cut at
// the drain's deadline before its turn.
// Under `handoff run --handover` (InheritedHandover, package handover)
// turns begin once HandedOver has reported true: ask it when the stop
// signal arrives, as a program must anyway to choose between offering and
// draining.
//
// f should only make c's reader return (c.SetReadDeadline(time.Now())) and
// note that the turn came; the reader then offers c between two messages.
// A turn granted just before stop is called may still call f after stop
// has returned false: f must be safe on a connection already offered or
// closed.
// A connection that was not accepted through Listener or Track (a
// *tls.Conn is unwrapped with its NetConn method) takes no slot.
func (h *Handover) OnTurn(c net.Conn, f func()) (stop func() bool) {
	t := &turn{h: h, c: trackedConn(c), f: f}
	h.turnsOnce.Do(func() { go h.beginTurns() })
	h.tmu.Lock()
	if h.tmode == turnsAll {
		h.tmu.Unlock()
		go f()
		return func() bool { return false }
	}
	if t.c != nil {
		t.c.mu.Lock()
		closed := t.c.closed
		if !closed {
			t.c.turn = t
		}
		t.c.mu.Unlock()
		if closed { // closed already: no turn to give
			h.tmu.Unlock()
			return func() bool { return false }
		}
	}
	if h.tmode == turnsPaced && t.lastRead() != 0 {
		t.setElem(h.waiting.PushFront(t)) // registered late, having read
	} else {
		t.setElem(h.waiting.PushBack(t))
	}
	granted := h.grantLocked()
	h.tmu.Unlock()
	start(granted)
	return func() bool {
		h.tmu.Lock()
		waiting := t.elem != nil
		granted := t.endLocked()
		h.tmu.Unlock()
		start(granted)
		return waiting
	}
}

// beginTurns waits until this generation hands over or stops, then gives
// the turns.
func (h *Handover) beginTurns() {
	<-h.u.exitC
	mode := turnsAll
	if h.HandedOver() {
		mode = turnsPaced
	}
	h.tmu.Lock()
	h.tmode = mode
	h.paced.Store(mode == turnsPaced)
	if mode == turnsPaced {
		h.latestReadFirstLocked()
	}
	granted := h.grantLocked()
	h.tmu.Unlock()
	start(granted)
	d := h.opts.HurryAfter
	if d <= 0 {
		d = h.u.opts.DrainTimeout / 2 // zero under InheritedHandover
	}
	if mode == turnsPaced && d > 0 {
		time.AfterFunc(d, h.hurryTurns)
	}
}

// hurryTurns gives every turn still waiting at once, HurryAfter (half the
// drain timeout) after the handover began: a connection that pauses longer
// is better than one that is cut at the drain's deadline before its turn
// came.
func (h *Handover) hurryTurns() {
	h.tmu.Lock()
	waiting := h.waiting.Len()
	h.tmode = turnsAll
	h.paced.Store(false)
	granted := h.grantLocked()
	h.tmu.Unlock()
	start(granted)
	if waiting > 0 && h.u.log != nil {
		h.u.log.Warn("the handover is slow: every connection still waiting for its turn is offered now", "event", "handover.hurried", "conns", waiting)
	}
}

// grantLocked gives the next turns, as many as there are free slots (all,
// when stopping without a handover), and returns them; the caller calls
// start once h.tmu is unlocked.
func (h *Handover) grantLocked() []*turn {
	var granted []*turn
	for h.waiting.Len() > 0 && (h.tmode == turnsAll || h.tmode == turnsPaced && h.tactive < h.opts.Turns) {
		t := h.waiting.Remove(h.waiting.Front()).(*turn)
		t.setElem(nil)
		if h.tmode == turnsPaced && t.c != nil {
			t.active = true
			h.tactive++
			t.timer = time.AfterFunc(h.opts.Timeout, t.end)
		}
		granted = append(granted, t)
	}
	return granted
}

// latestReadFirstLocked orders the turns waiting by their connection's
// last read, the latest first (see OnTurn); those that never read keep the
// order they registered in, after the others. The times are taken once,
// before the sort: the connections read on meanwhile.
func (h *Handover) latestReadFirstLocked() {
	type waiting struct {
		t    *turn
		read int64
	}
	ws := make([]waiting, 0, h.waiting.Len())
	for e := h.waiting.Front(); e != nil; e = e.Next() {
		t := e.Value.(*turn)
		ws = append(ws, waiting{t, t.lastRead()})
	}
	slices.SortStableFunc(ws, func(a, b waiting) int { return cmp.Compare(b.read, a.read) })
	for _, w := range ws {
		h.waiting.MoveToBack(w.t.elem)
	}
}

// lastRead is when t's connection last emptied its socket (see
// hoConn.Read), 0 if never or if it is not tracked.
func (t *turn) lastRead() int64 {
	if t.c == nil {
		return 0
	}
	return t.c.lastRead.Load()
}

// setElem sets t's place in h.waiting, nil once it leaves it.
func (t *turn) setElem(e *list.Element) {
	t.elem = e
	t.queued.Store(e != nil)
}

// read moves t to the front of the turns waiting, while turns are given:
// its connection has just emptied its socket (see OnTurn). Its turn then
// comes, in most protocols, before the client sends again, and its pause
// costs the client nothing; taken in the order they registered instead, a
// connection is paused whenever its place in the queue comes, and a
// message the client sends meanwhile waits for the handover.
func (t *turn) read() {
	h := t.h
	if !h.paced.Load() || !t.queued.Load() {
		return
	}
	h.tmu.Lock()
	if t.elem == nil || h.tmode != turnsPaced {
		h.tmu.Unlock()
		return
	}
	h.waiting.MoveToFront(t.elem) // it frees no slot: nothing to grant
	h.tmu.Unlock()
}

// start calls the f of each turn granted.
func start(granted []*turn) {
	for _, t := range granted {
		go t.f()
	}
}

// end ends t's turn: if it waits, it leaves the queue; if it is active, its
// slot goes to the next.
func (t *turn) end() {
	t.h.tmu.Lock()
	granted := t.endLocked()
	t.h.tmu.Unlock()
	start(granted)
}

// endLocked is end with h.tmu held; it returns the turns granted, for
// start once h.tmu is unlocked.
func (t *turn) endLocked() []*turn {
	h := t.h
	if t.elem != nil {
		h.waiting.Remove(t.elem)
		t.setElem(nil)
	}
	if !t.active {
		return nil
	}
	t.active = false
	h.tactive--
	t.timer.Stop()
	return h.grantLocked()
}

// endTurn ends the turn of c, if it has one (see OnTurn); closing, c
// takes no turn from then on.
func (c *hoConn) endTurn(closing bool) {
	c.mu.Lock()
	t := c.turn
	c.turn = nil
	c.closed = c.closed || closing
	c.mu.Unlock()
	if t != nil {
		t.end()
	}
}

// trackedConn finds the tracked connection in c's wrappers (a *tls.Conn's
// too), or nil.
func trackedConn(c net.Conn) *hoConn {
	var tc *hoConn
	layers(c, true, func(x net.Conn) bool {
		tc, _ = x.(*hoConn)
		return tc == nil
	})
	return tc
}

// layers calls visit with c and then each connection under it, outermost
// first — through Unwrap() net.Conn methods, a tracked connection's, and,
// if throughTLS, a *tls.Conn's NetConn — until visit returns false or the
// innermost was visited (64 at most).
func layers(c net.Conn, throughTLS bool, visit func(net.Conn) bool) {
	for range 64 {
		if !visit(c) {
			return
		}
		switch x := c.(type) {
		case *tls.Conn:
			if !throughTLS {
				return
			}
			c = x.NetConn()
		case interface{ Unwrap() net.Conn }: // *hoConn too
			c = x.Unwrap()
		default:
			return
		}
	}
}
