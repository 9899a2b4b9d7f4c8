package drain_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// The second request of the move tests, sent while the connection is held:
// the whole of it must reach whoever owns the connection next.
const secondRequest = "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"

// moveServer serves, through a Drainer, a handler that counts its requests
// and answers "server".
func moveServer(t *testing.T, grace time.Duration) (*drain.Drainer, string, *atomic.Int32) {
	t.Helper()
	var served atomic.Int32
	d, addr := serveDrainer(t, grace, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		served.Add(1)
		fmt.Fprint(w, "server")
	}))
	return d, addr, &served
}

// waitReadable waits, consuming nothing, until bytes wait unread on c (a
// server's side of a connection), for at most 5 s. Each look peeks at the
// socket (unreadNow): bytes that came before the wait began leave no
// readiness for the poller to report, since the wait resets it.
func waitReadable(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Read(unreadNow); err != nil {
		t.Fatalf("waiting for the request: %v", err)
	}
}

// drainStarted starts d's drain and returns once it has looked at the
// connections once (moves start at the first look), and its Stats channel.
func drainStarted(d *drain.Drainer) <-chan drain.Stats {
	looked := make(chan struct{})
	var once atomic.Bool
	d.OnProgress(func(int) {
		if once.CompareAndSwap(false, true) {
			close(looked)
		}
	})
	done := make(chan drain.Stats, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- d.Drain(ctx)
	}()
	<-looked
	return done
}

// TestMoveIdleTaken: an idle keep-alive connection is given to MoveIdle's
// function once the drain begins, its server's read stopped without a byte
// consumed: a request the client sends while the function holds it reaches
// the function whole, and the server never sees it.
func TestMoveIdleTaken(t *testing.T) {
	d, addr, served := moveServer(t, 10*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	request(t, c, r)
	held := make(chan struct{})
	d.MoveIdle(func(sc net.Conn) bool {
		close(held)
		waitReadable(t, sc)
		_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(secondRequest))
		if _, err := io.ReadFull(sc, got); err != nil || string(got) != secondRequest {
			t.Errorf("the mover read %q, %v; want %q", got, err, secondRequest)
		}
		fmt.Fprint(sc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nmoved")
		sc.Close()
		return true
	})
	done := drainStarted(d)
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was not given to the mover in 5 s")
	}
	fmt.Fprint(c, secondRequest)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "moved" {
		t.Errorf("answered %q, want the mover's", body)
	}
	st := <-done
	if st.Moved != 1 || st.IdleClosed != 0 || st.Cut != 0 || served.Load() != 1 {
		t.Errorf("stats %+v, %d requests served by the server; want 1 moved, the first request only", st, served.Load())
	}
}

// TestMoveIdleFresh: a connection accepted with no request yet (StateNew)
// moves too, and once moved its server writes nothing more on it: a mover
// that keeps the connection after the drain has ended (its server gone)
// gives the client its own answer first, not a "400 Bad Request" from the
// server whose read it stopped.
func TestMoveIdleFresh(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	accepted := make(chan struct{}, 1)
	d := drain.NewDrainer(drain.Options{IdleGrace: 10 * time.Second})
	d.Serve(&http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }),
		// The drain must begin once the server has the connection: one
		// still in the accept queue would not be the server's to move.
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted <- struct{}{}
			}
		},
	}, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not accept the connection in 5 s")
	}
	taken := make(chan net.Conn, 1)
	d.MoveIdle(func(sc net.Conn) bool {
		taken <- sc
		return true
	})
	done := drainStarted(d)
	var sc net.Conn
	select {
	case sc = <-taken:
	case <-time.After(5 * time.Second):
		t.Fatal("the new connection was not given to the mover in 5 s")
	}
	defer sc.Close()
	st := <-done // its server has let the connection go
	if st.Moved != 1 || served.Load() != 0 {
		t.Errorf("stats %+v, %d requests served by the server; want 1 moved, none served", st, served.Load())
	}
	fmt.Fprint(c, secondRequest)
	_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(secondRequest))
	if _, err := io.ReadFull(sc, got); err != nil || string(got) != secondRequest {
		t.Fatalf("the mover read %q, %v; want %q", got, err, secondRequest)
	}
	fmt.Fprint(sc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nmoved")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "moved" {
		t.Errorf("the client's first answer: %s %q, want the mover's 200 \"moved\"", resp.Status, body)
	}
}

// TestMoveIdleRefused: a mover that does not take the connection leaves it
// as it was: the request the client sent while it was held is served by
// the server, once, with "Connection: close" as in any drain.
func TestMoveIdleRefused(t *testing.T) {
	d, addr, served := moveServer(t, 10*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	request(t, c, r)
	held := make(chan struct{})
	var calls atomic.Int32
	d.MoveIdle(func(sc net.Conn) bool {
		if calls.Add(1) == 1 {
			close(held)
		}
		waitReadable(t, sc)
		return false
	})
	done := drainStarted(d)
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was not given to the mover in 5 s")
	}
	fmt.Fprint(c, secondRequest)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "server" || !resp.Close {
		t.Errorf("answered %q (close %v), want the server's with Connection: close", body, resp.Close)
	}
	st := <-done
	if st.Moved != 0 || st.Cut != 0 || served.Load() != 2 || calls.Load() != 1 {
		t.Errorf("stats %+v, %d served, mover called %d times; want none moved, 2 served, 1 call", st, served.Load(), calls.Load())
	}
}

// TestMoveIdleNotWithBufferedBytes: a connection whose next request has
// begun — its first byte read by the server with the previous request (a
// pipelined byte, or the one net/http's background read takes) — is not
// idle: it is never given to the mover, and its request is served here.
func TestMoveIdleNotWithBufferedBytes(t *testing.T) {
	d, addr, served := moveServer(t, 10*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	// The first request with the first byte of the second.
	fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"+secondRequest[:1])
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	var calls atomic.Int32
	d.MoveIdle(func(net.Conn) bool { calls.Add(1); return true })
	done := drainStarted(d)
	fmt.Fprint(c, secondRequest[1:])
	resp, err = http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "server" || !resp.Close {
		t.Errorf("answered %q (close %v), want the server's with Connection: close", body, resp.Close)
	}
	st := <-done
	if calls.Load() != 0 || st.Moved != 0 || served.Load() != 2 {
		t.Errorf("mover called %d times, stats %+v, %d served; want no call, 2 served", calls.Load(), st, served.Load())
	}
}

// TestMoveIdleManyUnderRequests: 50 keep-alive connections, 40 of them
// sending requests one after another, 1 ms apart, and 10 idle from their
// first answer until the drain has ended (then they send one more), through
// a drain whose mover takes each connection it is given and serves it
// itself: every request is answered once, by the server or the mover, and
// none fails. (The busy ones may all be answered with Connection: close
// and none moved, on a slow machine; the idle ones are moved.)
func TestMoveIdleManyUnderRequests(t *testing.T) {
	d, addr, served := moveServer(t, 10*time.Second)
	var byMover atomic.Int32
	d.MoveIdle(func(sc net.Conn) bool {
		go func() { // serve the connection on, as a new owner would
			defer sc.Close()
			_ = sc.SetReadDeadline(time.Time{})
			br := bufio.NewReader(sc)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				byMover.Add(1)
				fmt.Fprint(sc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nmoved")
			}
		}()
		return true
	})
	const n = 50
	stop := make(chan struct{})
	type result struct {
		sent int
		err  error
	}
	results := make(chan result, n)
	started := make(chan struct{}, n)
	const idle = 10
	for i := range n {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- result{0, err}
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			sent := 0
			for {
				select {
				case <-stop:
					if i >= idle || sent > 1 {
						results <- result{sent, nil}
						return
					}
				default:
				}
				time.Sleep(time.Millisecond) // a pace, not a wait: idle most of the time
				fmt.Fprint(c, secondRequest)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					results <- result{sent, fmt.Errorf("request %d: %w", sent+1, err)}
					return
				}
				body, _ := io.ReadAll(resp.Body)
				if b := string(body); b != "server" && b != "moved" || i < idle && sent == 1 && b != "moved" {
					results <- result{sent, fmt.Errorf("answer %q", b)}
					return
				}
				sent++
				if sent == 1 {
					started <- struct{}{}
					if i < idle {
						<-stop // idle through the drain
					}
				}
				if resp.Close {
					// Answered by the server during the drain: that
					// connection ends, cleanly, after its answer.
					results <- result{sent, nil}
					return
				}
			}
		}()
	}
	for range n {
		<-started
	}
	done := drainStarted(d)
	st := <-done
	close(stop)
	total := 0
	for range n {
		res := <-results
		if res.err != nil {
			t.Errorf("a client: %v", res.err)
		}
		total += res.sent
	}
	if got := int(served.Load() + byMover.Load()); got != total {
		t.Errorf("%d requests answered by the clients' count, %d served (%d by the server, %d by the mover)", total, got, served.Load(), byMover.Load())
	}
	t.Logf("%d requests, %d connections moved, %d served by the server, %d by the mover; stats %+v", total, st.Moved, served.Load(), byMover.Load(), st)
	if st.Moved < idle || st.Cut != 0 {
		t.Errorf("stats %+v: want at least the %d idle connections moved, none cut", st, idle)
	}
}
