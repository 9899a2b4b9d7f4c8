package drain_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// lateListener hands out its first connection only once Close has been
// called: an Accept that took a connection from the kernel just as the
// drain began, and returned after it (a goroutine that waited for a CPU).
type lateListener struct {
	net.Listener
	took      chan struct{} // closed once the first connection is taken
	release   chan struct{} // closed by Close
	closeOnce sync.Once
	first     atomic.Bool
}

func (l *lateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.first.CompareAndSwap(false, true) {
		close(l.took)
		<-l.release
	}
	return c, err
}

func (l *lateListener) Close() error {
	l.closeOnce.Do(func() { close(l.release) })
	return l.Listener.Close()
}

// A connection accepted as the drain begins, and handed to the server only
// after the listener closed, is served before Drain returns: Drain waits
// for an Accept under way. Before, Drain could count no connection, close
// the server and return while the request on it was unanswered — and a
// process that exits then resets it.
func TestDrainWaitsForAcceptUnderWay(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &lateListener{Listener: inner, took: make(chan struct{}), release: make(chan struct{})}
	var answered atomic.Bool
	d := drain.NewDrainer(drain.Options{IdleGrace: 50 * time.Millisecond})
	d.Serve(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
		answered.Store(true)
	})}, ln)
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	<-ln.took
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := d.Drain(ctx)
	if !answered.Load() {
		t.Fatalf("Drain returned (%+v) before the request on the connection accepted as it began was answered", st)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the client's response: %v, %v", resp, err)
	}
}
