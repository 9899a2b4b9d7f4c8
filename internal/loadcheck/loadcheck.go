// Package loadcheck drives an HTTP server with an open-loop load and counts,
// without letting Go's client hide anything, what went wrong.
//
// Requests are POSTs, which Go's http.Transport does not retry on a broken
// keep-alive connection (it retries GET and HEAD silently); a request whose
// trace shows more than one GotConn was retried anyway and is counted in
// Retried. Requests start at a constant rate whatever the latency (open
// loop), alternating between a keep-alive client and one that opens a fresh
// connection per request, and slow requests can be kept in flight beside
// them.
package loadcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config says what load to send.
type Config struct {
	// URL is the server's base URL, such as "http://127.0.0.1:8080".
	URL string
	// Rate is the number of fast requests started per second, split evenly
	// between keep-alive and fresh connections.
	Rate int
	// Slow, if positive, is how long slow requests take (they ask for
	// URL/slow?d=Slow); one starts every SlowEvery.
	Slow      time.Duration
	SlowEvery time.Duration
	// Timeout bounds each request. Default 10 s plus Slow.
	Timeout time.Duration
	// Dial, if set, opens the connections instead of a TCP dial to URL's
	// host: for a server on a Unix socket, say.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Result counts what happened.
type Result struct {
	Sent    int
	OK      int
	Retried int
	// Failed counts failures by class: ECONNREFUSED, ENOENT (a Unix socket's
	// file is missing), "connect ECONNRESET" (reset during the handshake:
	// like a refusal, the request was never sent), ECONNRESET, EOF,
	// timeout, HTTP <code>, other.
	Failed map[string]int
	// FailedReused counts the failures on a reused keep-alive connection:
	// the ones a server's drain causes when it closes an idle connection
	// that a client is sending on.
	FailedReused int
	// Samples holds up to 10 failure messages.
	Samples []string
	// Pids counts answers by the pid in the body ("pid=N").
	Pids map[int]int
	// Latencies of successful fast requests, sorted.
	Latencies []time.Duration
	// Requests holds every fast request, in the order they ended.
	Requests []Request
	// Start and End bound the run.
	Start, End time.Time
}

// Request is one fast request: when it started, how long it took, and its
// failure class ("" for success).
type Request struct {
	Start   time.Time
	Latency time.Duration
	Class   string
}

// Stats are latency percentiles of a set of requests.
type Stats struct {
	N                   int
	P50, P99, P999, Max time.Duration
}

// String formats s for a report.
func (s Stats) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v p999=%v max=%v", s.N, round(s.P50), round(s.P99), round(s.P999), round(s.Max))
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// Window returns the latency stats of the fast requests that started within
// [m-before, m+after] of any mark m, and of all the others (the baseline).
func (r *Result) Window(marks []time.Time, before, after time.Duration) (in, out Stats) {
	var a, b []time.Duration
	for _, q := range r.Requests {
		inside := false
		for _, m := range marks {
			if !q.Start.Before(m.Add(-before)) && !q.Start.After(m.Add(after)) {
				inside = true
				break
			}
		}
		if inside {
			a = append(a, q.Latency)
		} else {
			b = append(b, q.Latency)
		}
	}
	return stats(a), stats(b)
}

// Overall returns the latency stats of every fast request.
func (r *Result) Overall() Stats {
	d := make([]time.Duration, 0, len(r.Requests))
	for _, q := range r.Requests {
		d = append(d, q.Latency)
	}
	return stats(d)
}

func stats(d []time.Duration) Stats {
	if len(d) == 0 {
		return Stats{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }
	return Stats{N: len(d), P50: at(0.50), P99: at(0.99), P999: at(0.999), Max: d[len(d)-1]}
}

// Failures returns the total number of failed requests.
func (r *Result) Failures() int {
	n := 0
	for _, v := range r.Failed {
		n += v
	}
	return n
}

// Percentile returns the p-th percentile (0–100) of Latencies.
func (r *Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.Latencies)-1) * p / 100)
	return r.Latencies[i]
}

// String summarises r on one line.
func (r *Result) String() string {
	return fmt.Sprintf("sent=%d ok=%d failed=%d %v retried=%d pids=%d p50=%v p99=%v samples=%q",
		r.Sent, r.OK, r.Failures(), r.Failed, r.Retried, len(r.Pids), r.Percentile(50), r.Percentile(99), r.Samples)
}

// Run sends load until ctx is done, waits for the requests in flight, and
// returns the counts.
func Run(ctx context.Context, cfg Config) *Result {
	return Start(ctx, cfg).Wait()
}

// Load is a load under way, started by Start.
type Load struct {
	mu      sync.Mutex
	res     *Result
	answers int           // successful requests so far
	changed chan struct{} // closed and replaced at each success
	done    chan struct{} // closed when the load has ended
}

// Start starts the load that Run sends, until ctx is done, and returns at
// once: a test waits on its answers (WaitAnswers) to know that the load
// reaches the server, instead of sleeping.
func Start(ctx context.Context, cfg Config) *Load {
	l := &Load{res: &Result{Failed: map[string]int{}, Pids: map[int]int{}}, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		l.run(ctx, cfg)
		close(l.done)
	}()
	return l
}

// Wait waits until the load has ended, its context done and every request
// it started finished, and returns what happened.
func (l *Load) Wait() *Result {
	<-l.done
	return l.res
}

// Answers returns how many requests pid has answered so far; pid 0 counts
// every successful request.
func (l *Load) Answers(pid int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pid == 0 {
		return l.answers
	}
	return l.res.Pids[pid]
}

// WaitAnswers waits until pid (0: any pid) has answered n requests in all,
// and returns an error that says how many it answered if that takes longer
// than timeout or the load ends first.
func (l *Load) WaitAnswers(pid, n int, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		l.mu.Lock()
		got, ch := l.answers, l.changed
		if pid != 0 {
			got = l.res.Pids[pid]
		}
		l.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			return fmt.Errorf("loadcheck: pid %d answered %d requests in %v, want %d", pid, got, timeout, n)
		case <-l.done:
			return fmt.Errorf("loadcheck: the load ended with pid %d having answered %d requests, want %d", pid, got, n)
		}
	}
}

func (l *Load) run(ctx context.Context, cfg Config) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10*time.Second + cfg.Slow
	}
	res := l.res
	mu := &l.mu
	var wg sync.WaitGroup
	keep := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DialContext: cfg.Dial}}
	fresh := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{DisableKeepAlives: true, DialContext: cfg.Dial}}
	defer keep.CloseIdleConnections()

	res.Start = time.Now()
	do := func(c *http.Client, url string, fast bool) {
		defer wg.Done()
		start := time.Now()
		lat, pid, retried, err := post(c, url)
		if err != nil {
			lat = time.Since(start)
		}
		mu.Lock()
		defer mu.Unlock()
		res.Sent++
		if fast {
			q := Request{Start: start, Latency: lat}
			if err != nil {
				q.Class = classify(err)
			}
			res.Requests = append(res.Requests, q)
		}
		if retried {
			res.Retried++
		}
		if err != nil {
			class := classify(err)
			res.Failed[class]++
			if ce := (*connErr)(nil); errors.As(err, &ce) && ce.reused {
				res.FailedReused++
			}
			if len(res.Samples) < 10 {
				res.Samples = append(res.Samples, err.Error())
			}
			return
		}
		res.OK++
		res.Pids[pid]++
		l.answers++
		close(l.changed)
		l.changed = make(chan struct{})
		if fast {
			res.Latencies = append(res.Latencies, lat)
		}
	}

	interval := time.Second
	if cfg.Rate > 0 {
		interval = time.Second / time.Duration(cfg.Rate)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var slowC <-chan time.Time
	if cfg.Slow > 0 && cfg.SlowEvery > 0 {
		st := time.NewTicker(cfg.SlowEvery)
		defer st.Stop()
		slowC = st.C
	}
	slowURL := fmt.Sprintf("%s/slow?d=%s", cfg.URL, cfg.Slow)
	n := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			n++
			c := keep
			if n%2 == 0 {
				c = fresh
			}
			wg.Add(1)
			go do(c, cfg.URL+"/", true)
		case <-slowC:
			wg.Add(1)
			go do(keep, slowURL, false)
		}
	}
	wg.Wait()
	res.End = time.Now()
	sort.Slice(res.Latencies, func(i, j int) bool { return res.Latencies[i] < res.Latencies[j] })
}

// post sends one POST and returns its latency, the pid that answered, and
// whether the transport used more than one connection for it.
func post(c *http.Client, url string) (time.Duration, int, bool, error) {
	conns := 0
	var last httptrace.GotConnInfo
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conns++; last = i }}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("ping")))
	if err != nil {
		return 0, 0, false, err
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, conns > 1, connError(err, last)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(start)
	if err != nil {
		return 0, 0, conns > 1, err
	}
	if resp.StatusCode/100 != 2 {
		return 0, 0, conns > 1, &statusError{resp.StatusCode}
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(body), "pid=")))
	return lat, pid, conns > 1, nil
}

// connError adds to err which connection the request went out on: a failure
// on a reused keep-alive connection that sat idle points at the server closing
// idle connections, one on a fresh connection at the listener.
func connError(err error, c httptrace.GotConnInfo) error {
	if c.Conn == nil {
		return err
	}
	how := "on a fresh connection"
	if c.Reused {
		how = "on a reused connection"
		if c.WasIdle {
			how += fmt.Sprintf(" idle for %v", c.IdleTime.Round(time.Millisecond))
		}
	}
	return &connErr{fmt.Errorf("%w (%s from %s)", err, how, c.Conn.LocalAddr()), c.Reused}
}

// connErr is a request's failure with the connection it failed on.
type connErr struct {
	err    error
	reused bool // a keep-alive connection that had served before
}

func (e *connErr) Error() string { return e.err.Error() }
func (e *connErr) Unwrap() error { return e.err }

type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d", e.code) }

// classify names the class of a failed request.
// isDial reports whether err happened while connecting.
func isDial(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func classify(err error) string {
	var se *statusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ECONNREFUSED"
	case errors.Is(err, syscall.ENOENT):
		return "ENOENT" // no socket file to connect to
	case errors.Is(err, syscall.ECONNRESET) && isDial(err):
		// Reset during the handshake: like a refusal, nothing was sent.
		return "connect ECONNRESET"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "ECONNRESET"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's name for an EOF that reached the connection before
		// the request did (the server closed it: a FIN met the POST).
		strings.Contains(err.Error(), "http: server closed idle connection"):
		return "EOF"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// Saturate sends requests from conns keep-alive connections, each waiting for
// its answer before the next (closed loop), until ctx is done, and returns
// the requests per second served and the number that failed.
func Saturate(ctx context.Context, url string, conns int) (float64, int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var ok, failed int
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, f := 0, 0
			for ctx.Err() == nil {
				if _, _, _, err := post(c, url); err != nil {
					if ctx.Err() == nil {
						f++
					}
					continue
				}
				n++
			}
			mu.Lock()
			ok, failed = ok+n, failed+f
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(ok) / time.Since(start).Seconds(), failed
}
