package drain

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleGrace is how long a connection must have been idle, with
// nothing received, before a drain closes it.
const DefaultIdleGrace = time.Second

// Stats reports how a drain went.
type Stats struct {
	// Conns is the number of connections open when the drain began.
	Conns int
	// IdleClosed counts connections closed after IdleGrace with no request
	// waiting on them.
	IdleClosed int
	// Hijacked counts hijacked connections (WebSockets and the like) open
	// when the drain began.
	Hijacked int
	// GoAway counts HTTP/2 connections sent a GOAWAY (and left to close
	// once their streams are done) rather than closed when idle.
	GoAway int
	// Cut counts connections still open at the deadline, closed with work in
	// progress.
	Cut int
	// Moved counts idle connections taken by the MoveIdle function rather
	// than closed.
	Moved int
	// Duration is how long the drain took.
	Duration time.Duration
}

// Drainer tracks the connections of one or more http.Servers and drains them
// without losing a request; see the package documentation. Create one with
// NewDrainer, start each server with Serve, then call Drain once.
type Drainer struct {
	idleGrace time.Duration
	log       *slog.Logger

	mu       sync.Mutex
	conns    map[net.Conn]*connInfo
	hijacked map[net.Conn]struct{}
	// unseen are the hijacked connections whose close only their socket
	// tells (not a *trackedConn, which is forgotten as it closes): the
	// only ones a sweep looks at.
	unseen    map[net.Conn]struct{}
	swept     int  // len(unseen) after its last sweep
	blind     bool // a hijacked connection whose close cannot be seen was logged
	tracked   map[*http.Server]bool
	listeners []*trackedListener
	onDrain   []func()
	serving   sync.WaitGroup

	draining atomic.Bool
	// resumed is non-nil while accepting is paused, and closed by Resume.
	resumed chan struct{}
	// What the servers did, for Activity.
	accepted, requests, answered atomic.Uint64
	changed                      chan struct{}
	errC                         chan error

	// progress, if set, is called with the connections left during Drain
	// (see OnProgress).
	progress func(left int)

	// mover takes idle connections during Drain (see MoveIdle); moved
	// counts those it took.
	mover func(net.Conn) bool
	moved int

	// reqCtx is the parent of every request's context; cancelled at the
	// drain deadline.
	reqCtx    context.Context
	reqCancel context.CancelFunc
}

// requestCancelGrace is how long, at the drain deadline, handlers have between
// the cancellation of their request's context and the close of their
// connection.
const requestCancelGrace = 500 * time.Millisecond

type connInfo struct {
	state   http.ConnState
	since   time.Time
	closing bool
	// rcvd is the kernel's count of bytes received on the connection when
	// the drain first saw it idle (valid if counted and rcvdOK).
	counted, rcvdOK bool
	rcvd            uint64
	// h2 is the connection's own server when the Drainer serves its
	// HTTP/2 (see serveH2), goAway set once it was sent one. HTTP/2 reports
	// StateActive once as it starts — from then on a GOAWAY reaches the
	// connection — and again each time a stream opens on an idle
	// connection: h2Active counts these reports.
	h2       *h2Server
	goAway   bool
	h2Active int
	// moving: a move (see MoveIdle) holds the connection; offered: one
	// held it and gave it to the mover, which did not take it.
	moving, offered bool
}

// NewDrainer returns a Drainer configured by opts: it closes connections
// idle for opts.IdleGrace (DefaultIdleGrace if zero) once the drain has
// begun, logs to opts.Logger (nothing if nil), and calls opts.OnDrain, if
// set, when the drain begins (see OnDrain). The other fields of Options are
// Run's and are ignored here.
func NewDrainer(opts Options) *Drainer {
	idleGrace, logger := opts.IdleGrace, opts.Logger
	if idleGrace <= 0 {
		idleGrace = DefaultIdleGrace
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reqCtx, reqCancel := context.WithCancel(context.Background())
	d := &Drainer{
		reqCtx:    reqCtx,
		reqCancel: reqCancel,
		idleGrace: idleGrace,
		log:       logger,
		conns:     map[net.Conn]*connInfo{},
		hijacked:  map[net.Conn]struct{}{},
		unseen:    map[net.Conn]struct{}{},
		tracked:   map[*http.Server]bool{},
		changed:   make(chan struct{}, 1),
		errC:      make(chan error, 1),
	}
	if opts.OnDrain != nil {
		d.onDrain = append(d.onDrain, opts.OnDrain)
	}
	return d
}

// New returns a Drainer that closes connections idle for idleGrace
// (DefaultIdleGrace if zero) once the drain has begun. logger may be nil.
//
// Deprecated: use NewDrainer(Options{IdleGrace: idleGrace, Logger: logger}),
// which takes the same Options as Run.
func New(idleGrace time.Duration, logger *slog.Logger) *Drainer {
	return NewDrainer(Options{IdleGrace: idleGrace, Logger: logger})
}

// OnDrain registers f to be called, in its own goroutine, when the drain
// begins: the place to tell WebSocket handlers and other hijacked
// connections to finish.
func (d *Drainer) OnDrain(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onDrain = append(d.onDrain, f)
}

// Serve starts srv serving ln in a new goroutine and tracks its connections.
// It changes srv.Handler (nil means http.DefaultServeMux) to answer with
// "Connection: close" once draining, chains srv.ConnState, and wraps
// srv.BaseContext so that request contexts are cancelled at the drain
// deadline; do not change them afterwards. One server may serve several listeners. A server that
// fails is reported on Err.
//
// When srv would serve HTTP/2 with net/http's own implementation (over TLS
// with "h2" in srv.TLSConfig.NextProtos, or a nil srv.TLSConfig; h2c with
// prior knowledge where srv.Protocols asks for unencrypted HTTP/2), Serve
// sets srv.TLSNextProto so that Drain can end its HTTP/2 connections with
// the two GOAWAYs of RFC 9113, refusing no stream (see the package
// documentation), without closing its idle HTTP/1.1 ones: each HTTP/2
// connection is then served by an http.Server of its own with srv's
// handler, hooks and settings, which is the one a handler finds under
// http.ServerContextKey, through a wrapper that follows its frames; it
// costs one more goroutine per HTTP/2 connection (measured: 58-62 KiB per
// idle connection over TLS). Request.TLS is the connection's TLS state, as
// before. Responses on those connections carry no "Connection: close" once
// draining: HTTP/2 takes it for an immediate GOAWAY.
// With srv.TLSNextProto already set (e.g. by x/net/http2.ConfigureServer)
// HTTP/2 connections are drained as HTTP/1.1 ones are, closed once idle for
// the idle grace.
func (d *Drainer) Serve(srv *http.Server, ln net.Listener) {
	d.mu.Lock()
	if !d.tracked[srv] {
		d.tracked[srv] = true
		d.track(srv)
	}
	tl := &trackedListener{Listener: ln, d: d, closed: make(chan struct{})}
	d.listeners = append(d.listeners, tl)
	d.serving.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.serving.Done()
		err := srv.Serve(tl)
		if d.draining.Load() || errors.Is(err, http.ErrServerClosed) {
			return
		}
		select {
		case d.errC <- err:
		default:
		}
	}()
}

// Err returns a channel that receives the first error of a server that
// stopped serving before Drain.
func (d *Drainer) Err() <-chan error { return d.errC }

// OpenConns returns how many connections are open: served, and hijacked
// ones not yet seen closed.
func (d *Drainer) OpenConns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns) + len(d.hijacked)
}

// Open returns OpenConns().
//
// Deprecated: use OpenConns; the name Open read like an action.
func (d *Drainer) Open() int { return d.OpenConns() }

// OnProgress registers f to be called by Drain, in Drain's goroutine, with
// the number of connections left each time it looks (every 50 ms at most,
// and at every change). f must return quickly. Call it before Drain.
func (d *Drainer) OnProgress(f func(left int)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.progress = f
}

func (d *Drainer) track(srv *http.Server) {
	if base := srv.BaseContext; base != nil {
		srv.BaseContext = func(l net.Listener) context.Context {
			ctx, cancel := context.WithCancel(base(l))
			context.AfterFunc(d.reqCtx, cancel)
			return ctx
		}
	} else {
		// The common case, and the cheap one for a server on many
		// listeners: reqCtx itself, which carries no value either.
		srv.BaseContext = func(net.Listener) context.Context { return d.reqCtx }
	}
	prev := srv.ConnState
	report := func(c net.Conn, s http.ConnState) {
		d.setState(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	srv.ConnState = report
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	if overTLS, h2c := h2Modes(srv); overTLS || h2c {
		// The connections' servers answer without "Connection: close",
		// which would make HTTP/2 send its GOAWAY with the first response
		// after the drain began, before the drain's own (see h2conn.go).
		h2h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d.requests.Add(1)
			dw := &drainWriter{ResponseWriter: w, d: d, h2: true}
			h.ServeHTTP(dw, r)
			dw.answer()
		})
		// An "h2" entry is set in any case: with it, Go 1.27 hands h2c
		// over through "unencrypted_http2" too.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
			"h2": func(hs *http.Server, c *tls.Conn, nh http.Handler) {
				if !overTLS {
					return // as net/http does with a protocol it does not serve
				}
				st := c.ConnectionState()
				d.serveH2(hs, c, &st, nil, h2h, nh, report)
			},
		}
		if h2c {
			srv.TLSNextProto["unencrypted_http2"] = func(hs *http.Server, c *tls.Conn, nh http.Handler) {
				u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
				if !ok {
					d.log.Error("net/http passed an h2c connection in a form the drain does not know: closed", "event", "drain.h2c_unknown", "conn_type", fmt.Sprintf("%T", c.NetConn()))
					return
				}
				d.serveH2(hs, u.UnencryptedNetConn(), nil, []byte(h2Preface), h2h, nh, report)
			}
		}
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.requests.Add(1)
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
			h.ServeHTTP(w, r)
			d.answered.Add(1)
			return
		}
		dw := &drainWriter{ResponseWriter: w, d: d}
		h.ServeHTTP(dw, r)
		dw.answer() // net/http answers a handler that wrote nothing
	})
}

// acceptQuiesceMax bounds how long Drain waits for the Accepts under way
// once the listeners are closed (each returns at once, unless it had just
// taken a connection, which a wrapped listener may still be reading from).
const acceptQuiesceMax = time.Second

// waitAccepts waits until no Accept of lns is under way, for
// acceptQuiesceMax at most in all, or until ctx ends.
func waitAccepts(ctx context.Context, lns []*trackedListener) {
	var t *time.Timer
	for _, ln := range lns {
		ch := ln.acceptDone()
		if ch == nil {
			continue
		}
		if t == nil {
			t = time.NewTimer(acceptQuiesceMax)
			defer t.Stop()
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// noteAccepted counts c, just accepted, as a new connection, before its
// server reports it (ConnState).
func (d *Drainer) noteAccepted(c net.Conn) {
	d.mu.Lock()
	if d.conns[c] == nil {
		d.conns[c] = &connInfo{state: http.StateNew, since: time.Now()}
	}
	d.mu.Unlock()
}

func (d *Drainer) setState(c net.Conn, s http.ConnState) {
	d.mu.Lock()
	switch s {
	case http.StateNew, http.StateActive, http.StateIdle:
		if ci := d.conns[c]; ci != nil {
			ci.state, ci.since = s, time.Now()
			if ci.h2 != nil && s == http.StateActive {
				ci.h2Active++
			}
		} else {
			d.conns[c] = &connInfo{state: s, since: time.Now()}
		}
		if tc, ok := c.(*trackedConn); ok && s == http.StateIdle {
			tc.markIdle()
		}
	case http.StateHijacked:
		delete(d.conns, c)
		closed, seen := connClosed(c)
		if !seen && !d.blind {
			d.blind = true
			d.log.Warn("a hijacked connection's close cannot be seen: the drain waits for it until its deadline; "+
				"give your net.Conn wrapper a NetConn() or Unwrap() net.Conn method", "event", "drain.blind", "conn_type", fmt.Sprintf("%T", c))
		}
		if !closed {
			d.hijacked[c] = struct{}{}
			if _, tracked := c.(*trackedConn); !tracked {
				d.unseen[c] = struct{}{}
			}
		}
		// Connections whose close only the socket tells (TLS) leave the
		// set when swept: sweep whenever it has doubled, so that it stays
		// bounded by the hijacked connections open.
		if len(d.unseen) >= 64 && len(d.unseen) >= 2*d.swept {
			d.sweepHijacked()
		}
	case http.StateClosed:
		delete(d.conns, c)
	}
	d.mu.Unlock()
	d.signal()
}

// markH2 records that s is about to serve c with HTTP/2.
func (d *Drainer) markH2(c net.Conn, s *h2Server) {
	d.mu.Lock()
	if ci := d.conns[c]; ci != nil {
		ci.h2 = s
	}
	d.mu.Unlock()
}

// goAway sends a GOAWAY to the HTTP/2 connections that have served a
// stream and not had one yet, and to those that never served one once they
// have been silent for the idle grace since the drain began, and counts them
// in stats. A GOAWAY sooner on a new connection would race the client's
// first request, which Go's client, for one, then fails instead of retrying
// ("http2: client conn could not be established").
func (d *Drainer) goAway(start time.Time, stats *Stats) {
	var servers []*h2Server
	now := time.Now()
	d.mu.Lock()
	for c, ci := range d.conns {
		if ci.h2Active == 0 || ci.goAway {
			continue // not HTTP/2, not serving yet, or done
		}
		if ci.h2Active < 2 {
			since := ci.since
			if since.Before(start) {
				since = start
			}
			if ci.state != http.StateIdle {
				continue
			}
			if !ci.counted {
				ci.counted = true
				ci.rcvd, ci.rcvdOK = received(c)
			}
			if now.Sub(since) < d.idleGrace {
				continue
			}
			if n, ok := received(c); ok && ci.rcvdOK && n != ci.rcvd {
				ci.rcvd, ci.since = n, now // frames came in: silent again first
				continue
			}
		}
		ci.goAway = true
		servers = append(servers, ci.h2)
	}
	d.mu.Unlock()
	stats.GoAway += len(servers)
	for _, s := range servers {
		s.goAway()
	}
}

// sweepHijacked drops the hijacked connections that have been closed
// without a word to the Drainer (those in unseen; a *trackedConn is
// forgotten as it closes). It runs at every step of a drain, which every
// close wakes: looking at each of 10,000 tracked WebSockets each time made
// a handover of them spend a sixth of its CPU here. d.mu must be held.
func (d *Drainer) sweepHijacked() {
	for c := range d.unseen {
		if closed, _ := connClosed(c); closed {
			delete(d.unseen, c)
			delete(d.hijacked, c)
		}
	}
	d.swept = len(d.unseen)
}

// forget is called when a tracked connection is closed by anyone.
func (d *Drainer) forget(c net.Conn) {
	d.mu.Lock()
	delete(d.hijacked, c)
	delete(d.unseen, c)
	d.mu.Unlock()
	d.signal()
}

func (d *Drainer) signal() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Drain stops accepting (it closes the listeners given to Serve; the sockets
// stay open wherever else they are held; a connection that an Accept under
// way takes as they close is served like the others), answers every further request with
// "Connection: close", sends HTTP/2 connections a GOAWAY (see the package
// documentation), and returns when every connection is closed: active
// HTTP/1.1 ones once their response is written, idle ones after the idle
// grace unless a request waits unread on them, HTTP/2 ones about a second
// after their last stream ends, hijacked ones when their handler closes
// them. When ctx ends first, the contexts of the requests still running are
// cancelled; half a second later what is left is closed and counted in Cut.
// Drain then closes the servers and waits for their Serve goroutines. Call it
// once.
func (d *Drainer) Drain(ctx context.Context) Stats {
	start := time.Now()
	d.draining.Store(true)
	d.Resume()
	d.mu.Lock()
	lns := slices.Clone(d.listeners)
	for _, ln := range lns {
		ln.Close()
	}
	d.mu.Unlock()
	// An Accept that took a connection just as the listeners closed
	// counts it before it returns: wait for those under way, or the
	// drain could end before that connection's request is read.
	waitAccepts(ctx, lns)
	d.mu.Lock()
	d.sweepHijacked()
	stats := Stats{Conns: len(d.conns) + len(d.hijacked), Hijacked: len(d.hijacked)}
	for _, f := range d.onDrain {
		go f()
	}
	d.mu.Unlock()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		d.goAway(start, &stats)
		d.moveIdle()
		left := d.closeIdle(start, &stats)
		if progress := d.progressFunc(); progress != nil {
			progress(left)
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		case <-d.changed:
		}
		// (The tick may win the select just as ctx ends: check ctx itself.)
		if ctx.Err() != nil {
			stats.Cut = d.cut(start, &stats, tick.C)
			break
		}
	}
	d.mu.Lock()
	servers := make([]*http.Server, 0, len(d.tracked))
	for srv := range d.tracked {
		servers = append(servers, srv)
	}
	d.mu.Unlock()
	for _, srv := range servers {
		srv.Close()
	}
	d.mu.Lock()
	stats.Moved = d.moved
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.serving.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		d.log.Warn("a server's Serve did not return within 1s of Close", "event", "drain.serve_stuck")
	}
	stats.Duration = time.Since(start)
	return stats
}

func (d *Drainer) progressFunc() func(int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.progress
}

// closeIdle closes the connections that have been idle (or new and silent)
// for the idle grace since the drain began, and returns how many connections
// are left. A connection is closed only if nothing has arrived on it since
// the drain first saw it idle, and its FIN goes out in the same step as that
// check, to leave a client the least time to send a request in between.
func (d *Drainer) closeIdle(start time.Time, stats *Stats) int {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sweepHijacked()
	for c, ci := range d.conns {
		if ci.closing || ci.moving || ci.h2 != nil || (ci.state != http.StateIdle && ci.state != http.StateNew) {
			continue
		}
		since := ci.since
		if since.Before(start) {
			since = start
		}
		if !ci.counted {
			ci.counted = true
			ci.rcvd, ci.rcvdOK = received(c)
		}
		if now.Sub(since) < d.idleGrace || readSince(c, since) || !shutIfQuiet(c, ci.rcvd, ci.rcvdOK) {
			continue
		}
		ci.closing = true
		stats.IdleClosed++
		closeUnderlying(c)
	}
	return len(d.conns) + len(d.hijacked)
}

// closeUnderlying closes c without going through trackedConn.Close, which
// takes d.mu; the server's ConnState hook then reports it closed.
func closeUnderlying(c net.Conn) {
	if tc, ok := c.(*trackedConn); ok {
		tc.Conn.Close()
		return
	}
	c.Close()
}

// cut ends the drain at its deadline: it cancels the contexts of the
// requests still running, gives their handlers requestCancelGrace to return
// (closing idle connections meanwhile), then closes what is left and
// returns how many.
func (d *Drainer) cut(start time.Time, stats *Stats, tick <-chan time.Time) int {
	d.reqCancel()
	grace := time.NewTimer(requestCancelGrace)
	defer grace.Stop()
	for d.closeIdle(start, stats) > 0 {
		select {
		case <-grace.C:
			return d.closeAll()
		case <-tick:
		case <-d.changed:
		}
	}
	return 0
}

// closeAll closes every connection left and returns how many there were.
func (d *Drainer) closeAll() int {
	var all []net.Conn
	n := 0
	d.mu.Lock()
	for c, ci := range d.conns {
		if !ci.closing {
			n++
		}
		all = append(all, c)
	}
	for c := range d.hijacked {
		n++
		all = append(all, c)
	}
	clear(d.hijacked)
	clear(d.unseen)
	d.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
	return n
}

// drainWriter adds "Connection: close" to a response whose handler began
// before the drain but writes its header after it began.
type drainWriter struct {
	http.ResponseWriter
	d        *Drainer
	h2       bool // an HTTP/2 stream of a connection the Drainer serves: no header
	wrote    bool
	answered bool // counted in Activity's Answered
}

// answer counts the request as answered, once.
func (w *drainWriter) answer() {
	if !w.answered {
		w.answered = true
		w.d.answered.Add(1)
	}
}

func (w *drainWriter) header() {
	w.answer()
	if !w.wrote {
		w.wrote = true
		if w.d.draining.Load() && !w.h2 {
			w.ResponseWriter.Header().Set("Connection", "close")
		}
	}
}

func (w *drainWriter) WriteHeader(code int) {
	if code >= 200 {
		w.header()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *drainWriter) Write(p []byte) (int, error) {
	w.header()
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher.
func (w *drainWriter) Flush() {
	w.header()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack implements http.Hijacker; the connection is then tracked until its
// Close.
func (w *drainWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	w.answer() // the handler answers on the connection itself
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *drainWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
