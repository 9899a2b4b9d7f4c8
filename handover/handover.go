package handover

import (
	"log/slog"
	"net"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

// Options configure a Handover. The zero value is usable.
type Options struct {
	// Check, if set, is called in the new generation for each connection
	// offered, with its state, before it is prepared; an error refuses
	// it, and the old generation keeps and drains it.
	Check func(state []byte) error
	// Batch is how many connections move in one batch. Default
	// upgrader.DefaultHandoverBatch.
	Batch int
	// Timeout bounds how long the old generation waits for the new one to
	// answer one batch; past it the rest of the handover is aborted and
	// those connections drain. Default upgrader.DefaultHandoverTimeout.
	Timeout time.Duration
	// Turns is how many connections registered with OnTurn have their
	// turn at once. Default upgrader.DefaultHandoverTurns.
	Turns int
	// HurryAfter is how long after the handover began every connection
	// still waiting for its turn gets it at once: set it to well within
	// the program's own drain timeout (half of it, say), so that none is
	// cut at its deadline before its turn. Zero: never.
	HurryAfter time.Duration
	// Logger receives the handover's records (event keys handover.*).
	// Default slog.Default().
	Logger *slog.Logger
}

// Adoption is a connection adopted from the previous generation: Conn, to
// serve on (this process owns it, and may offer it again), State as the
// previous generation offered it, and Unread, the bytes it had read and not
// used, which come before anything Conn.Read returns.
type Adoption = upgrader.Adoption

// The errors of Offer are upgrader's: after any of them the connection is
// still this process's, untouched; serve it on and drain it.
var (
	ErrNotHandingOver = upgrader.ErrNotHandingOver // no successor adopts (yet): drain
	ErrStateTooLarge  = upgrader.ErrStateTooLarge  // state or unread over 64 KiB
	ErrStillInUse     = upgrader.ErrStillInUse     // a Read or Write in progress
	ErrUntracked      = upgrader.ErrUntracked      // not from Listener or Track
	ErrNotMovable     = upgrader.ErrNotMovable     // TLS, or no descriptor
	ErrRefused        = upgrader.ErrRefused        // the new generation refused it
	ErrAborted        = upgrader.ErrAborted        // the batch was aborted before its commit
)

// Handover moves this process's established connections to the process
// that replaces it under `handoff run --handover`, and adopts those of the
// process it replaces.
//
// On the old side, once the stop signal has arrived and HandedOver is true,
// each connection's goroutine stops reading between two messages and
// offers it:
//
//	if err := h.Offer(conn, state, unread); err == nil {
//		return // the connection is the new process's
//	}
//	// drain it as without a handover
//
// On the new side, each connection committed arrives on Adopted.
//
// Guarantees (those of upgrader.Handover, relayed by handoff): a connection
// is owned by exactly one process at any time — the old one until its
// batch is committed, the new one from the commit on; Offer returns nil
// only after the commit. If the new process dies, refuses, runs out of
// descriptors or does not answer within Options.Timeout before the commit,
// Offer returns an error and the old process still owns the connection. No
// byte is lost or repeated: reads and writes on a tracked connection fail
// once it is offered, and Unread carries what was read and not used.
type Handover struct {
	h *upgrader.Handover
}

// New returns this process's Handover, over the channels handoff passed
// it (HANDOFF_HANDOVER_FDS). Call it once, before the program says
// READY=1: it tells handoff at once that this process adopts connections,
// and those of the process it replaces start to arrive on Adopted.
//
// Its results:
//
//	(h, nil)   run by handoff --handover: h adopts and offers
//	(h, nil)   not (no variable): Adopted is closed at once, Offer returns
//	           ErrNotHandingOver; the program drains as without a handover
//	(nil, err) the variable is malformed or names no SOCK_SEQPACKET socket
func New(opts Options) (*Handover, error) {
	h, err := upgrader.InheritedHandover(upgrader.HandoverOptions{Check: opts.Check, Batch: opts.Batch, Timeout: opts.Timeout, Turns: opts.Turns, HurryAfter: opts.HurryAfter}, opts.Logger)
	if err != nil {
		return nil, err
	}
	return &Handover{h: h}, nil
}

// Adopted returns the channel of the connections adopted from the process
// this one replaces, each once. It is closed once no more can come: soon
// after New in a first process (once handoff sees it serve), or when the
// previous process has exited. Read it until closed.
func (h *Handover) Adopted() <-chan Adoption { return h.h.Adopted() }

// Listener returns ln with every connection it accepts tracked (see Track),
// so that it can be offered.
func (h *Handover) Listener(ln net.Listener) net.Listener { return h.h.Listener(ln) }

// Track returns c wrapped so that Offer can check that no Read or Write is
// in progress on it.
func (h *Handover) Track(c net.Conn) net.Conn { return h.h.Track(c) }

// HandedOver reports whether the process replacing this one adopts
// connections, so that Offer can succeed. handoff says so before it sends
// this process its stop signal: ask once the signal has arrived. It never
// turns back to false. False at a plain stop of handoff, and when the new
// process does not adopt: drain then.
func (h *Handover) HandedOver() bool { return h.h.HandedOver() }

// OnTurn arranges for f to be called, in a goroutine of its own, when it is
// c's turn to stop its reader and be offered, and returns a function that
// cancels that if the turn has not come yet. Once HandedOver has reported
// true (ask it when the stop signal arrives), the connections registered
// get their turns Options.Turns at a time, by their last read that emptied
// the socket, the latest first (see upgrader.Handover.OnTurn), and the
// others are
// served on meanwhile: each pauses for its own batch only. A turn ends when
// Offer(c) returns, when c is closed, or after Options.Timeout. See
// upgrader.Handover.OnTurn. Without a successor that adopts, f is never
// called: stop the readers and drain as without a handover.
func (h *Handover) OnTurn(c net.Conn, f func()) (stop func() bool) { return h.h.OnTurn(c, f) }

// Offer hands c to the process that replaces this one with state (at most
// upgrader.MaxHandoverState bytes) and unread (at most
// upgrader.MaxHandoverUnread bytes read from c and not used), and waits
// until its batch is committed or aborted: at most about Options.Timeout
// per batch ahead of it. c must come from Listener or Track and have no
// Read or Write in progress: call it at a message boundary, from the
// goroutine that reads, once that Read has returned.
//
// nil: the connection is the new process's; this process's descriptor is
// closed and c must not be used. An error: the connection is still this
// process's, untouched; serve it on and drain it.
func (h *Handover) Offer(c net.Conn, state, unread []byte) error {
	if !h.h.HandedOver() {
		return ErrNotHandingOver
	}
	return h.h.Offer(c, state, unread)
}
