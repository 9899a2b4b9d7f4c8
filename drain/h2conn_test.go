package drain

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"testing"
)

// frame returns an HTTP/2 frame as it goes on the wire.
func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], stream)
	return append(b, payload...)
}

// splitFrames cuts b into whole frames, or fails the test.
func splitFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 9 {
			t.Fatalf("%d bytes left, not a frame header", len(b))
		}
		n := 9 + (int(b[0])<<16 | int(b[1])<<8 | int(b[2]))
		if len(b) < n {
			t.Fatalf("a frame of %d bytes cut at %d", n, len(b))
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// pipeConn is a net.Conn whose writes pile up in w and whose reads come
// from r, at most chunk bytes at a time.
type pipeConn struct {
	net.Conn
	w     bytes.Buffer
	r     []byte
	chunk int
}

func (c *pipeConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *pipeConn) Read(p []byte) (int, error) {
	n := copy(p[:min(len(p), c.chunk)], c.r)
	c.r = c.r[n:]
	return n, nil
}

// TestH2ConnAnnounceAtBoundary writes a server's frames (one of 70,000
// bytes among them) through an h2Conn in pieces of every size from 1 byte
// to all of them, with the drain's announcement asked for before the
// first, the second, a middle and the last piece: the first GOAWAY and the
// PING go out once, whole, between two frames and after the server's
// SETTINGS, and the server's frames come out intact and in order.
func TestH2ConnAnnounceAtBoundary(t *testing.T) {
	server := [][]byte{
		frame(0x4, 0, 0, make([]byte, 12)), // SETTINGS
		frame(0x8, 0, 0, []byte{0, 0, 1, 0}),
		frame(0x1, 0x4, 1, bytes.Repeat([]byte{0x88}, 30)),
		frame(0x0, 0, 1, bytes.Repeat([]byte{'x'}, 70000)),
		frame(0x0, 0x1, 1, nil),
		frame(0x4, 0x1, 0, nil),
	}
	all := slices.Concat(server...)
	for _, size := range []int{1, 2, 5, 8, 9, 10, 17, 100, 4096, 70009, len(all)} {
		var pieces [][]byte
		for b := all; len(b) > 0; {
			n := min(size, len(b))
			pieces = append(pieces, b[:n])
			b = b[n:]
		}
		befores := []int{0, 1, len(pieces) / 2, len(pieces) - 1}
		slices.Sort(befores)
		befores = slices.DeleteFunc(slices.Compact(befores), func(i int) bool { return i >= len(pieces) })
		for _, before := range befores {
			c := &pipeConn{}
			h := newH2Conn(c, nil)
			for i, p := range pieces {
				if i == before {
					h.announce()
				}
				if n, err := h.Write(p); n != len(p) || err != nil {
					t.Fatalf("size %d: Write = %d, %v; want %d, nil", size, n, err, len(p))
				}
			}
			got := splitFrames(t, c.w.Bytes())
			i := slices.IndexFunc(got, func(f []byte) bool { return bytes.Equal(f, announcement[:17]) })
			if i < 1 || i+1 >= len(got) || !bytes.Equal(got[i+1], announcement[17:]) {
				t.Fatalf("size %d, announced before piece %d: the GOAWAY and PING at frame %d of %d, want together after the SETTINGS", size, before, i, len(got))
			}
			if rest := slices.Delete(slices.Clone(got), i, i+2); !slices.EqualFunc(rest, server, bytes.Equal) {
				t.Fatalf("size %d, announced before piece %d: the server's frames changed", size, before)
			}
			select {
			case <-h.sent:
			default:
				t.Fatalf("size %d, announced before piece %d: sent not closed", size, before)
			}
		}
	}
}

// TestH2ConnServerGoAwayFirst: once the server has written a GOAWAY of its
// own, the drain writes none (a later GOAWAY must not name a larger last
// stream); asked for before it, the drain's goes before it.
func TestH2ConnServerGoAwayFirst(t *testing.T) {
	settings, goAway := frame(0x4, 0, 0, nil), frame(0x7, 0, 0, make([]byte, 8))
	c := &pipeConn{}
	h := newH2Conn(c, nil)
	_, _ = h.Write(slices.Concat(settings, goAway[:5]))
	_, _ = h.Write(goAway[5:])
	h.announce()
	if got := c.w.Bytes(); !bytes.Equal(got, slices.Concat(settings, goAway)) {
		t.Errorf("after the server's GOAWAY, the drain wrote %d bytes more", len(got)-len(settings)-len(goAway))
	}
	select {
	case <-h.sent:
	default:
		t.Error("sent not closed")
	}

	c = &pipeConn{}
	h = newH2Conn(c, nil)
	h.announce() // before any frame: it waits for the SETTINGS
	_, _ = h.Write(slices.Concat(settings, goAway))
	if got, want := c.w.Bytes(), slices.Concat(settings, announcement, goAway); !bytes.Equal(got, want) {
		t.Errorf("wrote % x, want % x", got, want)
	}
}

// TestH2ConnSeesAck reads a client's bytes through an h2Conn in pieces of
// every size, with the drain's PING payload in a HEADERS frame, in a PING
// that is no ACK and in an ACK of other data before the drain's ACK: acked
// is closed once, at the last byte of the drain's ACK. With the preface
// read before (h2c), the same.
func TestH2ConnSeesAck(t *testing.T) {
	before := slices.Concat(
		[]byte(h2Preface),
		frame(0x4, 0, 0, nil),
		frame(0x1, 0x5, 1, append([]byte{0x82, 0x86, 0x84}, drainPing[:]...)),
		frame(0x6, 0, 0, drainPing[:]),
		frame(0x6, 0x1, 0, []byte("12345678")),
		frame(0x6, 0x1, 0, drainPing[:7]),
	)
	ack := frame(0x6, 0x1, 0, drainPing[:])
	all := slices.Concat(before, ack, frame(0x4, 0x1, 0, nil))
	for _, prefixed := range []bool{false, true} {
		for size := 1; size <= len(all); size++ {
			c := &pipeConn{r: all, chunk: size}
			var h *h2Conn
			if prefixed {
				c.r = all[len(h2Preface):]
				h = newH2Conn(c, []byte(h2Preface))
			} else {
				h = newH2Conn(c, nil)
			}
			buf := make([]byte, 64)
			read := 0
			for read < len(all) {
				n, _ := h.Read(buf)
				read += n
				select {
				case <-h.acked:
					if read < len(before)+len(ack) {
						t.Fatalf("size %d, prefixed %v: acked after %d bytes, before the ACK's end at %d", size, prefixed, read, len(before)+len(ack))
					}
				default:
					if read >= len(before)+len(ack) {
						t.Fatalf("size %d, prefixed %v: not acked after %d bytes", size, prefixed, read)
					}
				}
			}
		}
	}
}
