package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// requestTimeout bounds each request; a connection that stops answering
// fails its request after it, and the client's next request dials anew.
const requestTimeout = 3 * time.Second

// load is a set of HTTP/3 clients, each on a QUIC connection of its own (an
// http3.Transport of its own), each sending a POST every period. POST: the
// count of failures must not hide a retry.
type load struct {
	answered, failed atomic.Int64
	dials, broken    atomic.Int64
	graceful         atomic.Int64

	mu      sync.Mutex
	reqs    []request
	classes map[string]int
	samples []string

	sni     string    // the TLS server name; "" for addr's host
	from    time.Time // latencies count from here (set once the load settled)
	stop    chan struct{}
	stopped atomic.Bool
	wg      sync.WaitGroup
}

// request is one request: when it started, how long it took, whether it
// was answered.
type request struct {
	start   time.Time
	latency time.Duration
	ok      bool
}

// startLoad starts n clients of the server at addr (host:port), each sending
// a POST every period, with sni as the TLS server name ("" for addr's host).
func startLoad(addr, sni string, n int, period time.Duration) *load {
	l := &load{stop: make(chan struct{}), classes: map[string]int{}, sni: sni}
	for i := range n {
		l.wg.Add(1)
		go l.client(i, n, addr, period)
	}
	return l
}

func (l *load) client(i, n int, addr string, period time.Duration) {
	defer l.wg.Done()
	client, closeClient := l.newClient(addr)
	defer closeClient()
	body := []byte(fmt.Sprintf("client %d", i))
	// Spread the clients' requests over the period.
	first := time.NewTimer(period * time.Duration(i) / time.Duration(n))
	select {
	case <-l.stop:
		first.Stop()
		return
	case <-first.C:
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		start := time.Now()
		err := post(client, "https://"+addr+"/", body)
		if l.stopped.Load() {
			return
		}
		l.record(request{start: start, latency: time.Since(start), ok: err == nil}, err)
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
	}
}

// newClient returns an HTTP/3 client whose connections (one at a time) are
// counted and watched, and the function that closes them.
func (l *load) newClient(addr string) (*http.Client, func()) {
	host, _, _ := net.SplitHostPort(addr)
	if l.sni != "" {
		host = l.sni
	}
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: host, NextProtos: []string{http3.NextProtoH3}},
		QUICConfig:      &quicgo.Config{MaxIdleTimeout: requestTimeout, KeepAlivePeriod: 500 * time.Millisecond},
		Dial: func(ctx context.Context, a string, tlsConf *tls.Config, conf *quicgo.Config) (*quicgo.Conn, error) {
			c, err := quicgo.DialAddrEarly(ctx, a, tlsConf, conf)
			if err == nil {
				l.dials.Add(1)
				go l.watch(c)
			}
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: requestTimeout}, func() { _ = tr.Close() }
}

// post sends one POST and reads the whole answer, which must be a 200.
func post(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "text/plain", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp.StatusCode)
	}
	return nil
}

// statusError is an answer other than 200.
type statusError int

func (e statusError) Error() string { return fmt.Sprintf("HTTP %d", int(e)) }

func (l *load) record(r request, err error) {
	if err == nil {
		l.answered.Add(1)
	} else {
		l.failed.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, r)
	if err != nil {
		l.classes[class(err)]++
		if len(l.samples) < 5 {
			l.samples = append(l.samples, err.Error())
		}
	}
}

// class names the kind of a failure, for the table.
func class(err error) string {
	var ae *quicgo.ApplicationError
	var te *quicgo.TransportError
	var ie *quicgo.IdleTimeoutError
	var sr *quicgo.StatelessResetError
	var he *quicgo.HandshakeTimeoutError
	var ne net.Error
	var se statusError
	switch {
	case errors.As(err, &sr):
		return "stateless reset"
	case errors.As(err, &ie):
		return "idle timeout"
	case errors.As(err, &he):
		return "handshake timeout"
	case errors.As(err, &ae):
		return "application close"
	case errors.As(err, &te):
		return "transport close"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &se):
		return se.Error()
	}
	return "other"
}

// watch counts how c ended: gracefully (H3_NO_ERROR from either side, as
// after a GOAWAY), or broken (an idle timeout, a stateless reset, any other
// error) while the load ran.
func (l *load) watch(c *quicgo.Conn) {
	<-c.Context().Done()
	if l.stopped.Load() {
		return
	}
	var ae *quicgo.ApplicationError
	if errors.As(context.Cause(c.Context()), &ae) && ae.ErrorCode == quicgo.ApplicationErrorCode(http3.ErrCodeNoError) {
		l.graceful.Add(1)
		return
	}
	l.broken.Add(1)
	l.mu.Lock()
	if len(l.samples) < 5 {
		l.samples = append(l.samples, "connection broken: "+context.Cause(c.Context()).Error())
	}
	l.mu.Unlock()
}

// waitAnswered waits until n more requests were answered, at most within d;
// it reports whether they were.
func (l *load) waitAnswered(n int64, d time.Duration) bool {
	target := l.answered.Load() + n
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if l.answered.Load() >= target {
			return true
		}
	}
	return false
}

// end stops the clients and waits for them (each within requestTimeout).
func (l *load) end() {
	l.stopped.Store(true)
	close(l.stop)
	l.wg.Wait()
}

// settled marks the end of the warm-up (the clients' first handshakes):
// latencies counts the requests that start from now on.
func (l *load) settled() {
	l.mu.Lock()
	l.from = time.Now()
	l.mu.Unlock()
}

// latencies returns the p99 latency of the requests that started within
// after of a mark, and of the others since the load settled: failed
// requests count with their latency (at most requestTimeout).
func (l *load) latencies(marks []time.Time, after time.Duration) (in, out time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var a, b []time.Duration
	for _, r := range l.reqs {
		if r.start.Before(l.from) {
			continue
		}
		inside := false
		for _, m := range marks {
			if !r.start.Before(m) && r.start.Before(m.Add(after)) {
				inside = true
				break
			}
		}
		if inside {
			a = append(a, r.latency)
		} else {
			b = append(b, r.latency)
		}
	}
	return pct(a, 99), pct(b, 99)
}

// failures writes the failed requests, by class, of those sent.
func (l *load) failures() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := fmt.Sprint(l.failed.Load())
	if len(l.classes) > 0 {
		var parts []string
		for k, v := range l.classes {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s + fmt.Sprintf(" of %d", len(l.reqs))
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p/100)]
}
