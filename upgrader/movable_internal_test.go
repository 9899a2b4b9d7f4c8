package upgrader

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
)

// wrapped is a program's wrapper around a connection, with Unwrap.
type wrapped struct{ net.Conn }

func (w wrapped) Unwrap() net.Conn { return w.Conn }

// TestMovable: a tracked TCP connection under a program's wrapper moves;
// a TLS one does not (ErrNotMovable), nor an untracked one (ErrUntracked),
// nor one with no descriptor (ErrNotMovable); trackedConn finds the tracked
// connection under TLS too, and idleKeyOf the key under a wrapper.
func TestMovable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hc := &hoConn{Conn: c, key: "web"}

	if tc, raw, err := movable(wrapped{hc}); err != nil || tc != hc || raw == nil {
		t.Errorf("a tracked TCP connection under a wrapper: %v, %v, %v", tc, raw, err)
	}
	tlsConn := tls.Client(hc, &tls.Config{InsecureSkipVerify: true})
	if _, _, err := movable(tlsConn); !errors.Is(err, ErrNotMovable) {
		t.Errorf("TLS: %v, want ErrNotMovable", err)
	}
	if got := trackedConn(wrapped{tlsConn}); got != hc {
		t.Errorf("trackedConn under TLS: %v, want the tracked connection", got)
	}
	if _, _, err := movable(wrapped{c}); !errors.Is(err, ErrUntracked) {
		t.Errorf("untracked: %v, want ErrUntracked", err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if _, _, err := movable(&hoConn{Conn: p1}); !errors.Is(err, ErrNotMovable) {
		t.Errorf("no descriptor: %v, want ErrNotMovable", err)
	}
	if k := idleKeyOf(wrapped{hc}); k != "web" {
		t.Errorf("idleKeyOf: %q, want web", k)
	}
	if k := idleKeyOf(tlsConn); k != "" {
		t.Errorf("idleKeyOf under TLS: %q, want none", k)
	}
}
