package loadcheck_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
)

func run(t *testing.T, url string, d time.Duration) *loadcheck.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return loadcheck.Run(ctx, loadcheck.Config{URL: url, Rate: 100, Timeout: time.Second})
}

func TestCountsSuccessAndPids(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + ln.Addr().String(), Rate: 100, Timeout: time.Second})
	if err := load.WaitAnswers(0, 40, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	res := load.Wait()
	if res.Sent < 40 || res.OK != res.Sent || res.Failures() != 0 || res.Pids[os.Getpid()] != res.OK {
		t.Fatalf("%v", res)
	}
	if st := res.Overall(); st.N != res.Sent || st.P50 <= 0 || st.Max < st.P99 {
		t.Errorf("stats %v", st)
	}
	in, out := res.Window([]time.Time{res.Start.Add(200 * time.Millisecond)}, 0, 100*time.Millisecond)
	if in.N == 0 || out.N == 0 || in.N+out.N != res.Sent {
		t.Errorf("window %v, outside %v", in, out)
	}
}

func TestClassifiesFailures(t *testing.T) {
	// Refused: nothing listens.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if res := run(t, "http://"+addr, 200*time.Millisecond); res.Failed["ECONNREFUSED"] != res.Sent || res.Sent == 0 {
		t.Errorf("refused: %v", res)
	}

	// EOF or reset: the server closes without answering, having read the
	// request; or at once, before the request arrives (net/http may name
	// that EOF "server closed idle connection"): never "other".
	for _, c := range []struct {
		name      string
		readFirst bool
	}{{"closed without answer", true}, {"closed before the request", false}} {
		addr := closingServer(t, c.readFirst)
		res := run(t, "http://"+addr, 200*time.Millisecond)
		if res.OK != 0 || res.Failed["EOF"]+res.Failed["ECONNRESET"] != res.Sent {
			t.Errorf("%s: %v", c.name, res)
		}
	}

	// Non-2xx.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	})}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln2)
	defer srv.Close()
	if res := run(t, "http://"+ln2.Addr().String(), 200*time.Millisecond); res.Failed["HTTP 503"] != res.Sent {
		t.Errorf("503: %v", res)
	}
}

// closingServer accepts connections and closes each without an answer,
// after reading what came first if readFirst; it returns its address.
func closingServer(t *testing.T, readFirst bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if readFirst {
				_, _ = c.Read(make([]byte, 4096))
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}
