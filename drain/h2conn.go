package drain

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// The two GOAWAYs of RFC 9113, section 6.8.
//
// A single GOAWAY names the last stream the server has read; streams the
// client opened while it was on its way are refused, and a client that does
// not retry them counts errors. So a drained HTTP/2 connection is told in
// two steps: first a GOAWAY naming stream 2^31-1 — take no new stream, every
// one you opened will be served — and a PING; once the client's ACK of that
// PING comes in, every stream it opened before it saw the GOAWAY has come in
// before it, and the server's own graceful shutdown sends the GOAWAY naming
// the last of them, serves them and closes the connection.
//
// net/http's HTTP/2 server (bundled in Go 1.26, internal in Go 1.27) sends
// only the second and has no hook for the first, so the first is written by
// h2Conn, a net.Conn wrapper that the server reads and writes through (see
// serveH2): it follows the server's frames, to put its own two between two of
// them, and the client's, to find the ACK. It relies on two properties that
// both releases share. The server reads the client's frames one at a time,
// each only once the one before has been dealt with (its reading goroutine
// waits on the serving one), through a Framer that reads from the connection
// exactly the bytes of a frame; so by the time the ACK has been read, every
// stream opened before it is known to the server, which names the last of
// them. And the server ignores a PING ACK that answers no PING of its own.

// h2Preface is what an HTTP/2 client sends first (RFC 9113, section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 frame types and flags h2Conn looks for.
const (
	frameGoAway = 0x7
	framePing   = 0x6
	flagAck     = 0x1
)

// drainPing is the payload of the drain's PING.
var drainPing = [8]byte{'h', 'o', '-', 'd', 'r', 'a', 'i', 'n'}

// announcement is the first GOAWAY (last stream 2^31-1, NO_ERROR) and the
// PING that follows it, as they go on the wire.
var announcement = func() []byte {
	b := []byte{
		0, 0, 8, frameGoAway, 0, 0, 0, 0, 0, // length 8, stream 0
		0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, // last stream 2^31-1, NO_ERROR
		0, 0, 8, framePing, 0, 0, 0, 0, 0,
	}
	return append(b, drainPing[:]...)
}()

// frameScanner follows a stream of HTTP/2 frames cut anywhere, to know where
// each begins and ends. It keeps the payload of frames of one kind only.
type frameScanner struct {
	hdr  [9]byte
	nhdr int // bytes of the frame's header seen
	left int // bytes of its payload still to come, once the header is whole
	// keep, if set, says whether to keep a frame's payload, from its header.
	keep    func(hdr *[9]byte) bool
	kept    []byte
	keeping bool
	frames  int // frames seen whole
}

// atBoundary reports whether the bytes seen so far end with a whole frame.
func (s *frameScanner) atBoundary() bool { return s.nhdr == 0 }

// step takes the bytes at the start of p that belong to the frame under way,
// at most up to its end, and returns how many it took and, when the frame's
// header became whole, true in hdr; when the frame ended, true in end.
func (s *frameScanner) step(p []byte) (n int, hdr, end bool) {
	if s.nhdr < len(s.hdr) {
		n = copy(s.hdr[s.nhdr:], p)
		s.nhdr += n
		if s.nhdr < len(s.hdr) {
			return n, false, false
		}
		hdr = true
		s.left = int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
		s.keeping = s.keep != nil && s.keep(&s.hdr)
		s.kept = s.kept[:0]
		p = p[n:]
	}
	m := min(len(p), s.left)
	if s.keeping {
		s.kept = append(s.kept, p[:m]...)
	}
	s.left -= m
	n += m
	if s.left == 0 {
		s.nhdr = 0
		s.frames++
		end = true
	}
	return n, hdr, end
}

// h2Conn is the connection net/http's HTTP/2 server serves a drained
// connection through: it passes every byte both ways, and on announce writes
// the first GOAWAY and the PING between two of the server's frames.
type h2Conn struct {
	net.Conn

	// Read side: only the server's reader uses it, but that is one
	// goroutine and then another.
	rmu    sync.Mutex
	prefix []byte // bytes read before, to read again first (h2c: the preface)
	skip   int    // bytes of the client's preface still to come
	rs     frameScanner

	// Write side.
	wmu          sync.Mutex
	ws           frameScanner
	want         bool          // announce was called
	announced    bool          // the GOAWAY and the PING are written
	serverGoAway bool          // the server wrote a GOAWAY of its own
	sent         chan struct{} // closed once announced, or once it will not be
	sentOnce     sync.Once
	acked        chan struct{} // closed when the client's ACK of the PING is read
	ackOnce      sync.Once
}

// newH2Conn wraps c, from which the client's preface is still to be read,
// all of it or what follows prefix.
func newH2Conn(c net.Conn, prefix []byte) *h2Conn {
	h := &h2Conn{
		Conn:   c,
		prefix: prefix,
		skip:   len(h2Preface),
		sent:   make(chan struct{}),
		acked:  make(chan struct{}),
	}
	h.rs.keep = func(hdr *[9]byte) bool {
		return hdr[3] == framePing && hdr[4]&flagAck != 0 && hdr[0] == 0 && hdr[1] == 0 && hdr[2] == 8
	}
	return h
}

func (h *h2Conn) Read(p []byte) (int, error) {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	if len(h.prefix) > 0 {
		n := copy(p, h.prefix)
		h.prefix = h.prefix[n:]
		h.scanRead(p[:n])
		return n, nil
	}
	n, err := h.Conn.Read(p)
	h.scanRead(p[:n])
	return n, err
}

// scanRead follows the client's frames in p, just read, and closes h.acked
// at the end of the ACK of the drain's PING. h.rmu must be held.
func (h *h2Conn) scanRead(p []byte) {
	if h.skip > 0 {
		k := min(h.skip, len(p))
		h.skip -= k
		p = p[k:]
	}
	for len(p) > 0 {
		n, _, end := h.rs.step(p)
		p = p[n:]
		if end && h.rs.keeping && bytes.Equal(h.rs.kept, drainPing[:]) {
			h.ackOnce.Do(func() { close(h.acked) })
		}
	}
}

// canAnnounce reports whether the GOAWAY and the PING may go now: asked
// for, not yet sent, between two frames, after the server's first (its
// SETTINGS, which must come first) and before any GOAWAY of its own, whose
// last stream a later one must not exceed. h.wmu must be held.
func (h *h2Conn) canAnnounce() bool {
	return h.want && !h.announced && !h.serverGoAway && h.ws.frames > 0 && h.ws.atBoundary()
}

func (h *h2Conn) Write(p []byte) (int, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if !h.want || h.announced || h.serverGoAway {
		h.scanWrite(p)
		return h.Conn.Write(p)
	}
	// Find the first place in p where the announcement may go.
	at := -1
	for i := 0; ; {
		if h.canAnnounce() {
			at = i
			break
		}
		if i == len(p) {
			break
		}
		n, hdr, _ := h.ws.step(p[i:])
		if hdr && h.ws.hdr[3] == frameGoAway {
			h.serverGoAway = true
			h.sentOnce.Do(func() { close(h.sent) })
		}
		i += n
	}
	if at < 0 {
		return h.Conn.Write(p)
	}
	h.scanWrite(p[at:])
	buf := make([]byte, 0, len(p)+len(announcement))
	buf = append(append(append(buf, p[:at]...), announcement...), p[at:]...)
	n, err := h.Conn.Write(buf)
	h.markAnnounced()
	// Count p's bytes only.
	switch {
	case n >= at+len(announcement):
		n -= len(announcement)
	case n > at:
		n = at
	}
	return n, err
}

// scanWrite follows the server's frames in p, about to be written, noting
// any GOAWAY of its own. h.wmu must be held.
func (h *h2Conn) scanWrite(p []byte) {
	for len(p) > 0 {
		n, hdr, _ := h.ws.step(p)
		p = p[n:]
		if hdr && h.ws.hdr[3] == frameGoAway && !h.serverGoAway {
			h.serverGoAway = true
			h.sentOnce.Do(func() { close(h.sent) })
		}
	}
}

// markAnnounced records that the announcement went (or was tried: a write
// that failed ends the connection). h.wmu must be held.
func (h *h2Conn) markAnnounced() {
	h.announced = true
	h.sentOnce.Do(func() { close(h.sent) })
}

// announce writes the first GOAWAY and the PING: at once if the server is
// not writing, between two of its frames otherwise, or after its SETTINGS if
// they have not gone yet; never after a GOAWAY of the server's own. It
// blocks while the server writes (a write the peer does not read blocks
// until the connection is closed), so call it in a goroutine of its own.
func (h *h2Conn) announce() {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.serverGoAway {
		h.sentOnce.Do(func() { close(h.sent) })
		return
	}
	h.want = true
	if h.canAnnounce() {
		_, _ = h.Conn.Write(announcement)
		h.markAnnounced()
	}
}

// ackWait bounds how long the drain waits for the client's ACK of its PING
// before the second GOAWAY, and how long it waits for the first to go.
const ackWait = time.Second

// goAwayInTwo announces the drain to the client and calls shutdown — which
// makes the server send the GOAWAY naming the last stream it has, serve it
// and close — once the client has acknowledged the PING, or ackWait after
// the PING went without an ACK, or at once if the server sent a GOAWAY of
// its own first. It returns when shutdown was called.
func (h *h2Conn) goAwayInTwo(shutdown func()) {
	h.announce()
	t := time.NewTimer(ackWait)
	defer t.Stop()
	select {
	case <-h.sent:
	case <-t.C:
		// The server wrote nothing yet (not even its SETTINGS): it is
		// stuck, or its peer is. Its own GOAWAY goes now, and ours
		// never after it.
		shutdown()
		return
	}
	h.wmu.Lock()
	announced := h.announced
	h.wmu.Unlock()
	if announced {
		t.Reset(ackWait)
		select {
		case <-h.acked:
		case <-t.C:
		}
	}
	shutdown()
}

// Unwrap returns the connection h2Conn wraps.
func (h *h2Conn) Unwrap() net.Conn { return h.Conn }
