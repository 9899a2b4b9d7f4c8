//go:build linux

package upgrader_test

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// h2Conn is a bare HTTP/2 client connection: enough of the protocol to open a
// connection, send one GET and watch what the server sends, frame by frame.
type h2Conn struct {
	t *testing.T
	c *tls.Conn
}

// HTTP/2 frame types (RFC 9113, section 6).
const (
	h2Data     = 0x0
	h2Headers  = 0x1
	h2Settings = 0x4
	h2Ping     = 0x6
	h2GoAway   = 0x7

	h2EndStream = 0x1
	h2Ack       = 0x1
)

type h2Frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q, want h2", p)
	}
	h := &h2Conn{t: t, c: c}
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	h.write(h2Settings, 0, 0, nil)
	return h
}

func (h *h2Conn) write(typ, flags byte, stream uint32, payload []byte) {
	h.t.Helper()
	hdr := make([]byte, 9, 9+len(payload))
	hdr[0], hdr[1], hdr[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	hdr[3], hdr[4] = typ, flags
	binary.BigEndian.PutUint32(hdr[5:], stream)
	if _, err := h.c.Write(append(hdr, payload...)); err != nil {
		h.t.Fatal(err)
	}
}

// read returns the next frame, acknowledging the server's SETTINGS and
// PINGs; at the end of the connection it returns the error (io.EOF for a
// clean close).
func (h *h2Conn) read() (h2Frame, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(h.c, hdr[:]); err != nil {
		return h2Frame{}, err
	}
	f := h2Frame{typ: hdr[3], flags: hdr[4], stream: binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff}
	f.payload = make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
	if _, err := io.ReadFull(h.c, f.payload); err != nil {
		return h2Frame{}, err
	}
	if f.typ == h2Settings && f.flags&h2Ack == 0 {
		h.write(h2Settings, h2Ack, 0, nil)
	}
	if f.typ == h2Ping && f.flags&h2Ack == 0 {
		h.write(h2Ping, h2Ack, 0, f.payload)
	}
	return f, nil
}

// get sends GET / on stream and reads until the response ends.
func (h *h2Conn) get(stream uint32, authority string) {
	h.t.Helper()
	// HPACK: :method GET, :scheme https, :path / from the static table
	// (indexes 2, 7, 4), :authority as a literal with its name indexed.
	block := append([]byte{0x82, 0x87, 0x84, 0x01, byte(len(authority))}, authority...)
	h.write(h2Headers, 0x4|h2EndStream, stream, block)
	for {
		f, err := h.read()
		if err != nil {
			h.t.Fatalf("reading the response on stream %d: %v", stream, err)
		}
		if (f.typ == h2Data || f.typ == h2Headers) && f.stream == stream && f.flags&h2EndStream != 0 {
			return
		}
	}
}

// TestH2IdleGetsGoAway holds HTTP/2 connections idle across an upgrade, one
// that has served a request and one that never did, over Upgrader.ServeTLS
// and over Serve with a TLS listener: the old generation sends each the two
// GOAWAYs of RFC 9113, section 6.8, with NO_ERROR — the first naming stream
// 2^31-1 (with a PING, which the client answers), the second the last
// stream it served — and only then closes it, so that a client moves its
// next request to a new connection instead of sending it on one that is
// closing. The one that never served a stream gets them only after the idle
// grace (a new connection's first request is on its way), so after the
// other.
func TestH2IdleGetsGoAway(t *testing.T) {
	spawns(t)
	for _, mode := range [][]string{{"-servetls", ""}, {"-tls"}} {
		t.Run(mode[0], func(t *testing.T) {
			t.Parallel() // each mode its own server; they wait on drains
			if mode[0] == "-servetls" {
				mode[1] = t.TempDir()
			}
			s := launchBin(t, hijackBin, nil, nil, nil, append(mode, "-drain-timeout", "10s")...)
			first := s.waitPid(0, 10*time.Second)
			used, unused := dialH2(t, s.addr), dialH2(t, s.addr)
			used.get(1, s.addr)
			// Wait for the server's first SETTINGS on the unused one.
			if f, err := unused.read(); err != nil || f.typ != h2Settings {
				t.Fatalf("first frame: %+v %v", f, err)
			}
			sent := time.Now()
			s.signal(syscall.SIGHUP)
			s.waitPid(first, 10*time.Second)
			type watched struct {
				goAways          []h2Frame
				goAwayAt, closed time.Time // the first GOAWAY's time
				err              error
			}
			conns := []struct {
				name string
				h    *h2Conn
				last uint32
				w    watched
			}{{name: "used", h: used, last: 1}, {name: "unused", h: unused, last: 0}}
			var wg sync.WaitGroup
			for i := range conns {
				c := &conns[i]
				wg.Go(func() {
					for {
						f, err := c.h.read()
						if err != nil {
							c.w.err, c.w.closed = err, time.Now()
							return
						}
						if f.typ == h2GoAway {
							if c.w.goAways == nil {
								c.w.goAwayAt = time.Now()
							}
							c.w.goAways = append(c.w.goAways, f)
						}
					}
				})
			}
			wg.Wait()
			for _, c := range conns {
				if !errors.Is(c.w.err, io.EOF) {
					t.Errorf("%s: the connection ended with %v, want a clean close", c.name, c.w.err)
				}
				var lasts, codes []uint32
				for _, f := range c.w.goAways {
					lasts = append(lasts, binary.BigEndian.Uint32(f.payload)&0x7fffffff)
					codes = append(codes, binary.BigEndian.Uint32(f.payload[4:]))
				}
				if len(lasts) == 0 {
					t.Errorf("%s: closed %v after SIGHUP without a GOAWAY", c.name, c.w.closed.Sub(sent))
					continue
				}
				t.Logf("%s: GOAWAYs (last streams %v, codes %v), the first %v after SIGHUP, closed %v after it", c.name, lasts, codes,
					c.w.goAwayAt.Sub(sent).Round(time.Millisecond), c.w.closed.Sub(c.w.goAwayAt).Round(time.Millisecond))
				if !slices.Equal(lasts, []uint32{1<<31 - 1, c.last}) || !slices.Equal(codes, []uint32{0, 0}) {
					t.Errorf("%s: GOAWAYs naming %v with codes %v, want 2147483647 then %d, both 0 (NO_ERROR)", c.name, lasts, codes, c.last)
				}
			}
			if u, n := conns[0].w, conns[1].w; u.goAways != nil && n.goAways != nil && !n.goAwayAt.After(u.goAwayAt) {
				t.Errorf("the connection that never served a stream had its GOAWAY first")
			}
			if r := s.waitRecord(10*time.Second, "event=drain.done", fmt.Sprintf("pid=%d", first)); !r.Match("go_away=2") {
				t.Errorf("the drain's record does not count 2 GOAWAYs: %s", r)
			}
			s.stop()
		})
	}
}
