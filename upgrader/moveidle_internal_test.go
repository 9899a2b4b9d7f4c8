package upgrader

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestIdleListenerAccept: an adopted connection pushed while Accept waits
// on the socket wakes it and comes out first; a deadline the caller set
// while the push's wake-up was pending still applies afterwards; a
// connection from the socket comes out tracked, with the listener's key.
func TestIdleListenerAccept(t *testing.T) {
	tl, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l := &idleListener{TCPListener: tl, key: tl.Addr().String()}
	defer l.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	acceptC := make(chan accepted, 1)
	accept := func() {
		c, err := l.Accept()
		acceptC <- accepted{c, err}
	}
	wait := func() accepted {
		t.Helper()
		select {
		case a := <-acceptC:
			return a
		case <-time.After(5 * time.Second):
			t.Fatal("Accept did not return in 5 s")
			return accepted{}
		}
	}

	// An adopted connection wakes an Accept waiting on the socket.
	go accept()
	p1, p2 := net.Pipe()
	defer p2.Close()
	l.push(p1)
	if a := wait(); a.err != nil || a.c != p1 {
		t.Fatalf("Accept: %v, %v; want the adopted connection", a.c, a.err)
	}
	// The wake-up's deadline is gone: the next Accept takes a dialled
	// connection, tracked with the listener's key.
	go accept()
	d, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a := wait()
	if a.err != nil {
		t.Fatal(a.err)
	}
	if hc, ok := a.c.(*hoConn); !ok || hc.key != l.key {
		t.Fatalf("accepted %T, want a tracked connection with key %s", a.c, l.key)
	}
	a.c.Close()
	// A deadline set while a wake-up is pending holds after it.
	p3, p4 := net.Pipe()
	defer p4.Close()
	l.push(p3)
	if err := l.SetDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	go accept()
	if a := wait(); a.c != p3 {
		t.Fatalf("Accept: %v, %v; want the adopted connection first", a.c, a.err)
	}
	go accept()
	if a := wait(); !errors.Is(a.err, os.ErrDeadlineExceeded) {
		t.Fatalf("Accept after a past deadline: %v, %v; want a timeout", a.c, a.err)
	}
	// Close closes what no Accept took.
	p5, p6 := net.Pipe()
	l.push(p5)
	l.Close()
	_ = p6.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p6.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the adopted connection left in the queue: %v, want closed", err)
	}
	if l.push(p6) {
		t.Error("push after Close accepted a connection")
	}
}

// TestIdleState: the state of a moved idle connection carries its
// listener's address, and no other state is taken for one.
func TestIdleState(t *testing.T) {
	if k, ok := idleKey(idleState("127.0.0.1:8080")); !ok || k != "127.0.0.1:8080" {
		t.Errorf("idleKey(idleState) = %q, %v", k, ok)
	}
	for _, s := range []string{"", "handoff:http-idle", "\x00handoff:http", "hello"} {
		if _, ok := idleKey([]byte(s)); ok {
			t.Errorf("idleKey(%q) took it for an idle connection's", s)
		}
	}
}
