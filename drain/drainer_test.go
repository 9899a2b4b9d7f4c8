package drain_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// serveDrainer starts an http.Server with h through a Drainer on a fresh
// loopback listener.
func serveDrainer(t testing.TB, grace time.Duration, h http.Handler) (*drain.Drainer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := drain.NewDrainer(drain.Options{IdleGrace: grace})
	d.Serve(&http.Server{Handler: h}, ln)
	return d, ln.Addr().String()
}

// request sends one keep-alive request on c and returns the response.
func request(t *testing.T, c net.Conn, r *bufio.Reader) *http.Response {
	t.Helper()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestDrainIdleAndBusy: an idle keep-alive connection is closed once idle
// for the grace, cleanly; a request sent on it during the grace is answered
// with Connection: close; a request in flight finishes.
func TestDrainIdleAndBusy(t *testing.T) {
	release := make(chan struct{})
	d, addr := serveDrainer(t, 300*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		fmt.Fprintln(w, "ok")
	}))
	idle, _ := net.Dial("tcp", addr)
	idleR := bufio.NewReader(idle)
	request(t, idle, idleR)
	late, _ := net.Dial("tcp", addr)
	lateR := bufio.NewReader(late)
	request(t, late, lateR)
	busy := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/slow", "text/plain", nil)
		if err == nil {
			resp.Body.Close()
		}
		busy <- err
	}()
	time.Sleep(100 * time.Millisecond)

	done := make(chan drain.Stats, 1)
	go func() { done <- d.Drain(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	// Within the grace, a request on an idle connection is served, and told
	// to close.
	if resp := request(t, late, lateR); !resp.Close {
		t.Error("a request during the drain was not answered with Connection: close")
	}
	// The idle one is closed with EOF after the grace.
	_ = idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	select {
	case st := <-done:
		t.Fatalf("Drain returned %+v with a request in flight", st)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-busy; err != nil {
		t.Errorf("request in flight: %v", err)
	}
	st := <-done
	if st.Cut != 0 || st.IdleClosed < 1 || st.Conns != 3 {
		t.Errorf("stats %+v", st)
	}
	// Nothing listens any more.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener is still open after Drain")
	}
}

// TestDrainHijacked: a hijacked connection is counted, its handler hears
// OnDrain, and the drain ends when it closes the connection; one that never
// does is cut at the deadline.
func TestDrainHijacked(t *testing.T) {
	stop := make(chan struct{})
	d, addr := serveDrainer(t, 100*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\n\r\n")
		if r.URL.Path == "/polite" {
			<-stop
			c.Close()
		}
	}))
	d.OnDrain(func() { close(stop) })
	var conns []net.Conn
	for _, path := range []string{"/polite", "/stubborn"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.Contains(line, "101") {
			t.Fatalf("%s: %q", path, line)
		}
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	st := d.Drain(ctx)
	if st.Hijacked != 2 || st.Cut != 1 {
		t.Errorf("stats %+v: want 2 hijacked, 1 cut", st)
	}
	if st.Duration < 400*time.Millisecond {
		t.Errorf("Drain returned after %v, before the deadline, with a hijacked connection open", st.Duration)
	}
}

// TestDrainH2 serves HTTP/2 through a Drainer with the server's own hooks:
// a request sees the server's BaseContext and ConnContext values and TLS
// state; the drain sends the idle connection a GOAWAY, and the server's
// ConnState sees the connection new once and closed once.
func TestDrainH2(t *testing.T) {
	ts := httptest.NewTLSServer(nil) // for its certificate
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type key string
	var mu sync.Mutex
	states := map[http.ConnState]int{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s tls=%v base=%v conn=%v", r.Proto, r.TLS != nil, r.Context().Value(key("base")), r.Context().Value(key("conn")))
		}),
		BaseContext: func(net.Listener) context.Context { return context.WithValue(context.Background(), key("base"), 1) },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, key("conn"), 2) },
		ConnState: func(c net.Conn, s http.ConnState) {
			mu.Lock()
			states[s]++
			mu.Unlock()
		},
	}
	d := drain.NewDrainer(drain.Options{IdleGrace: time.Second})
	d.Serve(srv, tls.NewListener(ln, &tls.Config{Certificates: ts.TLS.Certificates, NextProtos: []string{"h2", "http/1.1"}}))
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "HTTP/2.0 tls=true base=1 conn=2"; string(b) != want {
		t.Errorf("answered %q, want %q", b, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := d.Drain(ctx)
	t.Logf("drain: %+v", st)
	if st.Conns != 1 || st.GoAway != 1 || st.IdleClosed != 0 || st.Cut != 0 {
		t.Errorf("drain stats %+v, want 1 connection sent a GOAWAY, none closed idle or cut", st)
	}
	// net/http reports the close from the connection's goroutine, once
	// the connection is closed: it may come just after Drain returns.
	closed := func() int { mu.Lock(); defer mu.Unlock(); return states[http.StateClosed] }
	for deadline := time.Now().Add(5 * time.Second); closed() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if states[http.StateNew] != 1 || states[http.StateClosed] != 1 {
		t.Errorf("ConnState saw %v, want one new and one closed", states)
	}
}

// TestDrainHijackedTLS: hijacked connections under TLS, whose close the
// Drainer sees only through the socket (a *tls.Conn, not its tracked
// connection), are swept when their handlers close them, and the drain
// ends then, long before its deadline — with more of them than a sweep is
// run for as they are hijacked.
func TestDrainHijackedTLS(t *testing.T) {
	ts := httptest.NewTLSServer(nil) // for its certificate
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\n\r\n")
		brw.Flush()
		<-stop
		c.Close()
	})}
	d := drain.NewDrainer(drain.Options{IdleGrace: time.Second})
	d.Serve(srv, tls.NewListener(ln, &tls.Config{Certificates: ts.TLS.Certificates, NextProtos: []string{"http/1.1"}}))
	d.OnDrain(func() { close(stop) })
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	const n = 80 // over the 64 from which hijacking sweeps
	for range n {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "example.com"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.Contains(line, "101") {
			t.Fatalf("%q", line)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := d.Drain(ctx)
	if st.Hijacked != n || st.Cut != 0 {
		t.Errorf("stats %+v: want %d hijacked, none cut", st, n)
	}
	t.Logf("drain: %+v", st)
	if st.Duration > 30*time.Second {
		t.Errorf("Drain took %v: the closed TLS connections were not seen", st.Duration)
	}
}
