package upgrader

import (
	"container/list"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits and defaults of a handover (see Handover).
const (
	// MaxHandoverState is the most state a connection may carry to the
	// next generation.
	MaxHandoverState = 64 << 10
	// MaxHandoverUnread is the most bytes read but not yet used that a
	// connection may carry to the next generation.
	MaxHandoverUnread = 64 << 10
	// DefaultHandoverBatch is the number of connections moved in one
	// batch (answered, then committed in one message) of a zero
	// HandoverOptions.Batch.
	DefaultHandoverBatch = 64
	// DefaultHandoverTimeout is how long the new generation may leave the
	// connections in flight unanswered, for a zero
	// HandoverOptions.Timeout.
	DefaultHandoverTimeout = 2 * time.Second
	// DefaultHandoverTurns is how many connections registered with
	// OnTurn have their turn at once, for a zero HandoverOptions.Turns:
	// four batches of DefaultHandoverBatch.
	DefaultHandoverTurns = 4 * DefaultHandoverBatch
)

// The errors of Offer. An Offer that fails leaves the connection with the
// caller, as it was: serve it on and drain it as without a handover.
var (
	// ErrNotHandingOver: this generation has not handed over to a new
	// one (it is serving, stopping, or has no successor that adopts
	// connections).
	ErrNotHandingOver = errors.New("upgrader: handover: this generation is not handing over to a new one; drain the connection")
	// ErrNoAdopter: the new generation does not adopt connections: it did
	// not call Handover before Ready, or its release predates handovers.
	ErrNoAdopter = errors.New("upgrader: handover: the new generation does not adopt connections (it did not call Handover before Ready, or its release has no handover)")
	// ErrStateTooLarge: state or unread is over its limit
	// (MaxHandoverState, MaxHandoverUnread).
	ErrStateTooLarge = errors.New("upgrader: handover: the connection's state or unread bytes are over the limit")
	// ErrStillInUse: a Read or Write on the connection is in progress, so
	// bytes could be consumed or sent by this generation after the
	// handover. Stop the connection's reader first — SetReadDeadline(
	// time.Now()) from any goroutine, then wait for its Read to return —
	// and offer from the goroutine that reads, between two messages.
	ErrStillInUse = errors.New("upgrader: handover: a Read or Write on the connection is still in progress: stop its reader first (SetReadDeadline(time.Now()), wait for Read to return), then offer it between two messages")
	// ErrUntracked: the connection did not come from Handover.Listener
	// or Handover.Track, so nothing shows that its reader has stopped.
	ErrUntracked = errors.New("upgrader: handover: the connection was not accepted through Handover.Listener nor wrapped with Handover.Track, so nothing shows its reader has stopped; wrap it where it is accepted")
	// ErrNotMovable: the connection has no descriptor that can move, such
	// as a *tls.Conn: Go's crypto/tls cannot export a session's keys and
	// sequence numbers. Such connections drain.
	ErrNotMovable = errors.New("upgrader: handover: the connection cannot move to another process")
	// ErrRefused: the new generation refused the connection (out of
	// descriptors, stopping, or its HandoverOptions.Check said no).
	ErrRefused = errors.New("upgrader: handover: the new generation refused the connection")
	// ErrAborted: the batch was aborted before it was committed: the new
	// generation died, closed the channel, or did not answer within
	// HandoverOptions.Timeout.
	ErrAborted = errors.New("upgrader: handover: aborted before commit")
	// ErrConnOffered is what Read and Write on a tracked connection
	// return while it is being offered, and after it was handed over.
	ErrConnOffered = errors.New("upgrader: handover: the connection is offered or handed over to the new generation")
)

// HandoverOptions configure a Handover. The zero value is usable.
type HandoverOptions struct {
	// Check, if set, is called in the new generation for each connection
	// offered, with its state, before the connection is prepared; an
	// error refuses it, and the old generation keeps and drains it. It
	// runs in the handover's own goroutine: a slow Check slows the
	// handover, and past Timeout aborts the batch.
	Check func(state []byte) error
	// Batch is how many connections move in one batch, committed
	// together; up to 8 batches are in flight at once (sent, not yet
	// answered in full). Default DefaultHandoverBatch.
	Batch int
	// Timeout bounds how long the old generation waits for an answer
	// from the new one while connections are in flight; past it every
	// batch in flight is aborted, and so is the rest of the handover.
	// Default DefaultHandoverTimeout.
	Timeout time.Duration
	// Turns is how many connections registered with OnTurn have their
	// turn at once (a turn lasts until its Offer returns or its
	// connection is closed, at most Timeout). Default
	// DefaultHandoverTurns.
	Turns int
	// HurryAfter is how long after the handover began every connection
	// still waiting for its turn gets it at once, so that none is cut at
	// the drain's deadline before its turn. Default: half the Upgrader's
	// Options.DrainTimeout; under InheritedHandover, never unless set.
	HurryAfter time.Duration
}

// Adoption is a connection adopted from the previous generation.
type Adoption struct {
	// Conn is the connection, tracked as by Handover.Track so that it can
	// be offered again at the next release. This process owns it. Its
	// socket options (TCP keep-alive, TCP_NODELAY, buffer sizes) are as the
	// previous generation left them: they belong to the socket.
	//
	// What Conn wraps (its Unwrap method) is not a *net.TCPConn, which
	// would cost the adoption ten more system calls, but it has the same
	// methods for the same purposes: SyscallConn, CloseRead, CloseWrite,
	// SetKeepAlive, SetKeepAlivePeriod, SetNoDelay, SetReadBuffer and
	// SetWriteBuffer. Its errors are *net.OpError, net.ErrClosed and
	// io.EOF, as a *net.TCPConn's. RemoteAddr asks the kernel the first
	// time it is called, and is nil if the peer has gone by then.
	Conn net.Conn
	// State is the state the previous generation offered it with.
	State []byte
	// Unread are the bytes the previous generation had read from Conn and
	// not used: they come before anything Conn.Read returns.
	Unread []byte
}

// Handover moves established connections, with their state, from a
// generation that hands over to the new one, instead of draining them. Get
// it from Upgrader.Handover.
//
// On the old side, when Exit is closed and HandedOver is true, each
// connection's goroutine stops reading between two messages and calls Offer:
//
//	if err := h.Offer(conn, state, unread); err == nil {
//		return // the connection is the new generation's
//	}
//	// drain it as without a handover
//
// On the new side, each connection offered and committed arrives on
// Adopted, to be served on from where the old generation left it.
//
// What is guaranteed:
//
//   - Every connection offered is owned by exactly one generation at any
//     time: until its batch is committed the old one owns it (the new one
//     holds a descriptor but never reads or writes it, and closes it
//     without a shutdown on abort); from the commit on, the new one.
//     Offer returns nil only after the commit, and has then closed this
//     process's descriptor (the connection stays open in the new one).
//   - No byte is lost or repeated: Offer refuses a connection with a Read
//     or Write in progress (ErrStillInUse), and Reads and Writes through
//     the tracked connection fail with ErrConnOffered from the moment it
//     is offered, so the kernel's buffers hold every byte this process
//     did not consume; bytes the client sends meanwhile wait there for
//     whichever generation owns it next. Unread carries what the program
//     read but did not use.
//   - The commit is one message the old generation writes to the Unix
//     socket between the two processes (SCM_RIGHTS carries the
//     descriptors, one per message, in batches of HandoverOptions.Batch;
//     a batch is committed once each of its connections is answered, and
//     up to 8 batches are in flight, so that the new generation prepares
//     the next ones while the old one commits). If the new generation dies,
//     refuses, runs out of descriptors, or answers nothing for
//     HandoverOptions.Timeout before that write, Offer returns an error
//     (ErrRefused, ErrAborted) and the old generation still owns the
//     connection: drain it. If the old generation dies before the write,
//     the new one closes what it prepared (those connections end with
//     it); once written, the commit reaches the new one even if the old
//     one dies at once.
//   - A new generation that dies after the commit takes the connections
//     it adopted with it, as any crash does.
//   - The old generation logs what became of the connections offered
//     (handover.committed, handover.refused, handover.aborted) once the
//     offers that came together are through: before it closes any
//     connection it committed and before those Offers return. A program
//     that exits as soon as its last connection is closed (Serve's drain
//     ends then) or its last Offer returned has logged them all.
//
// TLS connections cannot move (ErrNotMovable): drain them as today.
type Handover struct {
	u    *Upgrader
	opts HandoverOptions

	// The new side: committed connections, delivered in order.
	adoptC  chan Adoption
	qmu     sync.Mutex
	queue   []Adoption
	qDone   bool
	qSignal chan struct{}

	// The old side: the sender, started at the first Offer.
	outOnce sync.Once
	out     *hoSender
	outErr  error

	// internal: made by the Upgrader for MoveIdleConns, not by the
	// program, which then reads nothing from Adopted.
	internal bool

	// The turns (see OnTurn): those waiting, in order, and how many are
	// active.
	turnsOnce sync.Once
	tmu       sync.Mutex
	waiting   list.List
	tmode     turnMode
	tactive   int
	paced     atomic.Bool // tmode is turnsPaced, read without tmu
}

// Handover returns this generation's Handover, made at the first call with
// opts (later calls return it and ignore opts). A generation started by one
// that hands over must call it before Ready (or Serve) to adopt
// connections: it then tells its predecessor that it takes them. Where
// connections cannot move (systems other than Linux) Offer fails with an
// error that wraps errors.ErrUnsupported and Adopted is closed.
func (u *Upgrader) Handover(opts HandoverOptions) *Handover {
	return u.handover(opts, false)
}

// handover is Handover, made by the Upgrader itself if internal.
func (u *Upgrader) handover(opts HandoverOptions, internal bool) *Handover {
	u.hoMu.Lock()
	defer u.hoMu.Unlock()
	if u.ho != nil {
		return u.ho
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultHandoverBatch
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultHandoverTimeout
	}
	if opts.Turns <= 0 {
		opts.Turns = DefaultHandoverTurns
	}
	h := &Handover{u: u, opts: opts, adoptC: make(chan Adoption), qSignal: make(chan struct{}, 1), internal: internal}
	u.ho = h
	go h.deliver()
	h.adoptFromParent()
	return h
}

// Adopted returns the channel of the connections this generation adopted
// from the previous one, each once. It is closed once no more can come:
// at once in a first generation, or when the previous generation has
// ended its side of the handover (it exited). Read it until closed.
func (h *Handover) Adopted() <-chan Adoption { return h.adoptC }

// Listener returns ln with every connection it accepts tracked (see
// Track), so that it can be offered.
func (h *Handover) Listener(ln net.Listener) net.Listener { return &hoListener{ln} }

// Track returns c wrapped so that Offer can check that no Read or Write
// is in progress on it. Read, Write and the rest go to c.
func (h *Handover) Track(c net.Conn) net.Conn {
	if _, ok := c.(*hoConn); ok {
		return c
	}
	return &hoConn{Conn: c}
}

// Offer hands c to the new generation with state (at most
// MaxHandoverState bytes, the program's own, given back in
// Adoption.State) and unread (at most MaxHandoverUnread bytes read from c
// and not used yet, given back in Adoption.Unread), and waits until its
// batch is committed or aborted: as long as the new generation answers,
// with at most HandoverOptions.Timeout between two answers. Call it in a generation that has handed over
// (Exit is closed, HandedOver is true), at a message boundary, once the
// connection's reader has returned: c must come from Listener or Track
// (directly, or under wrappers with an Unwrap() net.Conn method) and have
// no Read or Write in progress.
//
// nil: the connection is the new generation's; this process's descriptor
// is closed (through c, so that wrappers see it) and c must not be used.
// An error: the connection is still this process's, untouched, usable
// again; serve and drain it as without a handover. state and unread are
// copied; the caller may reuse them.
func (h *Handover) Offer(c net.Conn, state, unread []byte) error {
	if tc := trackedConn(c); tc != nil {
		defer tc.endTurn(false) // whatever the outcome: the next one's turn (see OnTurn)
	}
	if !h.u.HandedOver() {
		return ErrNotHandingOver
	}
	if len(state) > MaxHandoverState || len(unread) > MaxHandoverUnread {
		err := fmt.Errorf("%w: state %d bytes (at most %d), unread %d bytes (at most %d); it drains", ErrStateTooLarge, len(state), MaxHandoverState, len(unread), MaxHandoverUnread)
		h.invalid(err)
		return err
	}
	tc, raw, err := movable(c)
	if err != nil {
		h.invalid(err)
		return err
	}
	if err := tc.seal(); err != nil {
		h.invalid(err)
		return err
	}
	err = h.send(c, raw, state, unread)
	if err != nil {
		tc.unseal()
	}
	return err
}

// invalid logs an Offer the program should not have made.
func (h *Handover) invalid(err error) {
	h.u.log.Warn("connection not handed over; it drains", "event", "handover.invalid", "err", err)
}

// movable finds the tracked connection in c's wrappers and the socket
// under it.
func movable(c net.Conn) (*hoConn, syscall.RawConn, error) {
	var tc *hoConn
	var inner net.Conn
	isTLS := false
	layers(c, false, func(x net.Conn) bool {
		switch x := x.(type) {
		case *tls.Conn:
			isTLS = true
			return false
		case *hoConn:
			tc = x
		}
		inner = x
		return true
	})
	if isTLS {
		return nil, nil, fmt.Errorf("%w: a TLS connection (Go's crypto/tls cannot export its session); it drains", ErrNotMovable)
	}
	if tc == nil {
		return nil, nil, ErrUntracked
	}
	sc, ok := inner.(syscall.Conn)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %T has no descriptor", ErrNotMovable, inner)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNotMovable, err)
	}
	return tc, raw, nil
}

// commit queues adopted connections for Adopted.
func (h *Handover) commit(as []Adoption) {
	h.qmu.Lock()
	h.queue = append(h.queue, as...)
	h.qmu.Unlock()
	h.wake()
}

// endAdoptions says no more connections will be adopted.
func (h *Handover) endAdoptions() {
	h.qmu.Lock()
	h.qDone = true
	h.qmu.Unlock()
	h.wake()
}

func (h *Handover) wake() {
	select {
	case h.qSignal <- struct{}{}:
	default:
	}
}

// deliver hands the committed connections to Adopted, in order, and
// closes it once they are all delivered and no more can come.
func (h *Handover) deliver() {
	for {
		h.qmu.Lock()
		q, done := h.queue, h.qDone
		h.queue = nil
		h.qmu.Unlock()
		for _, a := range q {
			if key, ok := idleKey(a.State); ok {
				h.u.takeIdle(key, a.Conn)
				continue
			}
			h.adoptC <- a
		}
		if len(q) == 0 && done {
			close(h.adoptC)
			return
		}
		if len(q) == 0 {
			<-h.qSignal
		}
	}
}

// hoListener tracks the connections it accepts.
type hoListener struct{ net.Listener }

func (l *hoListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if hc, ok := c.(*hoConn); ok {
		return hc, nil // tracked already (see MoveIdleConns)
	}
	return &hoConn{Conn: c}, nil
}

// hoConn counts the Reads and Writes in progress on a connection, and
// refuses them once it is offered (sealed).
type hoConn struct {
	net.Conn
	// key is the address of the listener that accepted it, where that
	// listener takes idle HTTP connections (see MoveIdleConns).
	key     string
	mu      sync.Mutex
	readers int
	writers int
	sealed  bool
	turn    *turn // its place in the turns, if registered (see OnTurn)
	closed  bool  // Close was called: it takes no turn
	// lastRead is when a Read last emptied the socket (it returned data,
	// less than it asked for), on the monotonic clock (see monoNow), 0 if
	// never: the turns go to the latest first (see OnTurn).
	lastRead atomic.Int64
}

func (c *hoConn) enter(w bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sealed {
		return ErrConnOffered
	}
	if w {
		c.writers++
	} else {
		c.readers++
	}
	return nil
}

// leave ends what enter began, and returns c's turn, if it has one.
func (c *hoConn) leave(w bool) *turn {
	c.mu.Lock()
	if w {
		c.writers--
	} else {
		c.readers--
	}
	t := c.turn
	c.mu.Unlock()
	return t
}

func (c *hoConn) Read(p []byte) (n int, err error) {
	if err := c.enter(false); err != nil {
		return 0, err
	}
	defer func() {
		t := c.leave(false)
		if n > 0 && n < len(p) {
			c.lastRead.Store(monoNow())
			if t != nil {
				t.read()
			}
		}
	}()
	return c.Conn.Read(p)
}

// monoStart is this package's start, from which monoNow counts.
var monoStart = time.Now()

// monoNow is the time since monoStart on the monotonic clock, in
// nanoseconds, and never 0.
func monoNow() int64 { return int64(time.Since(monoStart)) + 1 }

func (c *hoConn) Write(p []byte) (int, error) {
	if err := c.enter(true); err != nil {
		return 0, err
	}
	defer c.leave(true)
	return c.Conn.Write(p)
}

// seal refuses further Reads and Writes, if none is in progress.
func (c *hoConn) seal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.sealed:
		return fmt.Errorf("%w (offered twice)", ErrConnOffered)
	case c.readers > 0 || c.writers > 0:
		return fmt.Errorf("%w (%d reads, %d writes)", ErrStillInUse, c.readers, c.writers)
	}
	c.sealed = true
	return nil
}

func (c *hoConn) unseal() {
	c.mu.Lock()
	c.sealed = false
	c.mu.Unlock()
}

// ReadFrom keeps the kernel's sendfile/splice path for what is written
// from a file (an HTTP response, say); it counts as a Write.
func (c *hoConn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.enter(true); err != nil {
		return 0, err
	}
	defer c.leave(true)
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// Close ends the connection's turn, if it has one (see OnTurn), and closes
// it.
func (c *hoConn) Close() error {
	c.endTurn(true)
	return c.Conn.Close()
}

// CloseWrite half-closes, as *net.TCPConn does.
func (c *hoConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Unwrap returns the connection c wraps.
func (c *hoConn) Unwrap() net.Conn { return c.Conn }
