package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

// Over ws:// the connections move to the new generation instead of being
// closed (upgrader.Handover). coder/websocket, like the other maintained Go
// WebSocket libraries (gorilla/websocket, nhooyr's), keeps its read buffer
// to itself and cannot start on a connection mid-stream, so this side of the
// example reads and writes the frames itself (RFC 6455, unfragmented
// messages, which is what browsers and these libraries send for messages
// of this size): it knows where each frame ends, and hands over between two
// frames with the bytes read and not used.

// maxFrame bounds a frame's payload; a larger one closes with 1009.
const maxFrame = 32 << 10

// wsEcho is the ws:// handler: the handshake, then the echo loop.
type wsEcho struct {
	h       offerer // nil with -handover=false: connections close with 1001
	adopted <-chan upgrader.Adoption
	// closing, if not nil, ends when this generation stops without handing
	// over: every reader is interrupted, and its connection closed with
	// 1001. Nil where OnTurn does that (library mode, with a handover): a
	// handover then starts no extra goroutine per connection at the stop.
	closing context.Context
	pid     int
	// background runs an adopted connection's serve so that this
	// generation's stop waits for it (upgrader.Go in library mode); an
	// error means it will not run and the connection is closed.
	background func(func()) error
	// conns, if not nil, counts the connections being served (daemon
	// mode, where no upgrader waits for hijacked connections).
	conns *sync.WaitGroup
}

// offerer is what serve needs of a handover: upgrader.Handover in library
// mode, handover.Handover under handoff run --handover.
type offerer interface {
	Offer(c net.Conn, state, unread []byte) error
	OnTurn(c net.Conn, f func()) (stop func() bool)
	HandedOver() bool
}

func (e *wsEcho) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "a WebSocket upgrade expected", http.StatusBadRequest)
		return
	}
	// Counted before the hijack: from it on, http.Server.Shutdown no
	// longer waits for this handler, and the drain waits on conns.
	if e.conns != nil {
		e.conns.Add(1)
		defer e.conns.Done()
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
	if err := brw.Flush(); err != nil {
		c.Close()
		return
	}
	pending, _ := brw.Reader.Peek(brw.Reader.Buffered())
	e.serve(c, pending)
}

// serve echoes c's messages, starting with the bytes in pending, until the
// client closes or this generation hands over (then c moves, when its turn
// comes) or stops.
func (e *wsEcho) serve(c net.Conn, pending []byte) {
	// stopped is set when c's reader should stop: c's turn to be offered
	// has come (the other connections are served on meanwhile, so that
	// each pauses only for its own batch), or this generation stops
	// without handing over.
	var stopped atomic.Bool
	interrupt := func() { stopped.Store(true); _ = c.SetReadDeadline(time.Now()) }
	if e.h != nil {
		stopTurn := e.h.OnTurn(c, interrupt)
		defer stopTurn()
	}
	if e.closing != nil {
		stop := context.AfterFunc(e.closing, interrupt)
		defer stop()
	}
	buf := append([]byte(nil), pending...)
	tmp := make([]byte, 4096)
	for {
		for {
			op, payload, n, ok := parseFrame(buf)
			if !ok {
				break
			}
			buf = buf[n:]
			switch op {
			case 1, 2: // text, binary
				if _, err := c.Write(frame(op, append([]byte(fmt.Sprintf("pid=%d ", e.pid)), payload...))); err != nil {
					c.Close()
					return
				}
			case 8: // close
				_, _ = c.Write(frame(8, payload))
				c.Close()
				return
			case 9: // ping
				_, _ = c.Write(frame(10, payload))
			}
		}
		if len(buf) > maxFrame+14 {
			_, _ = c.Write(frame(8, []byte{0x03, 0xf1})) // 1009: too big
			c.Close()
			return
		}
		if stopped.Load() {
			// Between two frames, nothing read in progress.
			if e.h != nil && e.h.Offer(c, nil, buf) == nil {
				return // the new generation's now
			}
			// -handover=false, or it could not move: as before, 1001.
			_, _ = c.Write(frame(8, append([]byte{0x03, 0xe9}, fmt.Sprintf("pid %d hands over", e.pid)...)))
			c.Close()
			return
		}
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil && !(errors.Is(err, os.ErrDeadlineExceeded) && stopped.Load()) {
			c.Close()
			return
		}
	}
}

// adopt serves the connections the previous generation handed over, as
// background work, so that this generation's own drain waits for them.
func (e *wsEcho) adopt() {
	for a := range e.adopted {
		if e.background(func() { e.serve(a.Conn, a.Unread) }) != nil {
			a.Conn.Close()
		}
	}
}

// parseFrame reads one whole frame at the start of b: its opcode, its
// payload unmasked, and its length in b; ok is false until b holds it all.
func parseFrame(b []byte) (op byte, payload []byte, n int, ok bool) {
	if len(b) < 2 {
		return 0, nil, 0, false
	}
	op = b[0] & 0x0f
	l, i := int(b[1]&0x7f), 2
	switch l {
	case 126:
		if len(b) < 4 {
			return 0, nil, 0, false
		}
		l, i = int(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return 0, nil, 0, false
		}
		l64 := binary.BigEndian.Uint64(b[2:10])
		if l64 > maxFrame {
			l64 = maxFrame + 1
		}
		l, i = int(l64), 10
	}
	if l > maxFrame {
		return 0, nil, 0, false // the caller sees the buffer grow past the bound
	}
	var mask []byte
	if b[1]&0x80 != 0 {
		if len(b) < i+4 {
			return 0, nil, 0, false
		}
		mask, i = b[i:i+4], i+4
	}
	if len(b) < i+l {
		return 0, nil, 0, false
	}
	payload = bytes.Clone(b[i : i+l])
	for j := range payload {
		if mask != nil {
			payload[j] ^= mask[j%4]
		}
	}
	return op, payload, i + l, true
}

// frame is a server's unmasked, final frame.
func frame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch l := len(payload); {
	case l < 126:
		b = append(b, byte(l))
	case l < 1<<16:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(l))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(l))
	}
	return append(b, payload...)
}
