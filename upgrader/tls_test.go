//go:build linux

package upgrader_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestServeTLSUnderUpgrades serves HTTPS with Upgrader.ServeTLS and sends
// POSTs over HTTP/2 at a constant rate, over one multiplexed connection and
// over a fresh connection each, through three upgrades: none fails, and every
// response is HTTP/2. An HTTP/2 client may retry a request on a new
// connection when the server refused its stream unprocessed (GOAWAY, or a
// connection accepted as the old generation stopped): safe by the protocol,
// and counted — at most one per upgrade.
func TestServeTLSUnderUpgrades(t *testing.T) {
	alongside(t)
	s := launchBin(t, hijackBin, nil, nil, nil, "-servetls", t.TempDir(), "-drain-timeout", "10s")
	s.waitPid(0, 10*time.Second)
	// A tls.Config each: the transport adds "h2" to its NextProtos.
	multiplexed := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	// "fresh" has a Transport for each request: one Transport with
	// DisableKeepAlives puts each new HTTP/2 connection in its pool, where
	// two requests can both reserve it, and the second then retries on
	// another ("http2: client conn not usable"), with or without upgrades
	// — 71 of 443 requests on a busy machine, which said nothing of the
	// server.
	clients := map[string]func() *http.Client{
		"multiplexed": func() *http.Client { return multiplexed },
		"fresh": func() *http.Client {
			return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true, DisableKeepAlives: true}, Timeout: 10 * time.Second}
		},
	}
	type counts struct{ sent, ok, failed, retried, notH2 atomic.Int64 }
	results := map[string]*counts{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for name, client := range clients {
		n := &counts{}
		results[name] = n
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					n.sent.Add(1)
					var conns atomic.Int32
					var mu sync.Mutex
					var seen []string
					trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
						conns.Add(1)
						mu.Lock()
						seen = append(seen, i.Conn.LocalAddr().String())
						mu.Unlock()
					}}
					req, _ := http.NewRequest(http.MethodPost, "https://"+s.addr+"/", strings.NewReader("x"))
					req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
					c := client()
					defer c.CloseIdleConnections()
					resp, err := c.Do(req)
					if err != nil {
						n.failed.Add(1)
						t.Logf("%s: %v", name, err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					n.ok.Add(1)
					if conns.Load() > 1 {
						n.retried.Add(1)
						mu.Lock()
						t.Logf("%s: retried on a new connection: %v", name, seen)
						mu.Unlock()
					}
					if resp.ProtoMajor != 2 {
						n.notH2.Add(1)
					}
				}()
			}
		}()
	}
	// Both clients get k more answers: before the upgrades, and after each
	// once the old generation has drained and exited.
	answered := func(k int64) {
		deadline := time.Now().Add(10 * time.Second)
		for _, n := range results {
			for min := n.ok.Load() + k; n.ok.Load() < min; {
				if time.Now().After(deadline) {
					t.Fatalf("fewer than %d more requests answered in 10 s", k)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	answered(20)
	pid := s.pid()
	for i := 0; i < 3; i++ {
		s.signal(syscall.SIGHUP)
		old := pid
		pid = s.waitPid(pid, 10*time.Second)
		s.waitExited(old, 15*time.Second)
		answered(30)
	}
	close(stop)
	wg.Wait()
	for name, n := range results {
		t.Logf("%s: sent %d, failed %d, retried %d, not h2 %d", name, n.sent.Load(), n.failed.Load(), n.retried.Load(), n.notH2.Load())
		if n.failed.Load() != 0 || n.retried.Load()*20 > n.sent.Load() || n.notH2.Load() != 0 || n.sent.Load() < 100 {
			t.Errorf("%s: sent %d, failed %d, retried %d, not HTTP/2 %d", name, n.sent.Load(), n.failed.Load(), n.retried.Load(), n.notH2.Load())
		}
	}
	multiplexed.CloseIdleConnections()
	s.stop()
}
