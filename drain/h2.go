package drain

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
)

// HTTP/2 and the drain.
//
// net/http's HTTP/2 server ends a connection gracefully — a GOAWAY that names
// the last stream it will serve, then the close once those streams are done —
// only from a hook that http.Server.Shutdown runs, and Shutdown also closes
// the server's idle HTTP/1.1 connections at once, which loses the requests
// clients are sending on them (see the package documentation). So each
// HTTP/2 connection is served by an http.Server of its own, made for it with
// the server's handler, hooks and settings: shutting that one down sends the
// GOAWAY to that connection and touches nothing else. Only public API is
// used: the server's TLSNextProto["h2"] hands the connection over, and the
// connection's server serves it from a listener that yields it once.

// errNoConns is what a listener of this file returns once it has nothing
// more to accept.
var errNoConns = errors.New("drain: no more connections to accept")

// noConns is a listener with nothing to accept: serving it makes net/http
// set up a server's HTTP/2 and return.
type noConns struct{}

func (noConns) Accept() (net.Conn, error) { return nil, errNoConns }
func (noConns) Close() error              { return nil }
func (noConns) Addr() net.Addr            { return &net.TCPAddr{} }

// takesH2 reports whether net/http would serve HTTP/2 over TLS for srv with
// its own implementation — srv.TLSNextProto unset, HTTP/2 not turned off by
// srv.Protocols or GODEBUG=http2server=0, srv.TLSConfig nil or listing "h2"
// — and the Drainer can therefore serve it instead. It asks net/http, by
// setting up a server with the same settings.
func takesH2(srv *http.Server) bool {
	if srv.TLSNextProto != nil {
		return false
	}
	if p := srv.Protocols; p != nil && (!p.HTTP2() || p.UnencryptedHTTP2()) {
		return false // HTTP/2 off, or h2c, which TLSNextProto does not carry
	}
	probe := &http.Server{Protocols: srv.Protocols}
	if srv.TLSConfig != nil {
		if !slices.Contains(srv.TLSConfig.NextProtos, "h2") {
			return false
		}
		probe.TLSConfig = srv.TLSConfig.Clone()
	}
	if err := probe.Serve(noConns{}); !errors.Is(err, errNoConns) {
		return false // HTTP/2 refused (e.g. the cipher suites): srv.Serve reports it
	}
	return probe.TLSNextProto["h2"] != nil
}

// h2Server is the server of one HTTP/2 connection, and its listener.
type h2Server struct {
	srv  *http.Server
	conn *tls.Conn

	mu       sync.Mutex
	accepted bool
	closed   chan struct{} // the listener is closed
	done     chan struct{} // the connection is closed
	doneOnce sync.Once
}

func (s *h2Server) Accept() (net.Conn, error) {
	s.mu.Lock()
	first := !s.accepted
	s.accepted = true
	s.mu.Unlock()
	if first {
		return s.conn, nil
	}
	select {
	case <-s.closed:
	case <-s.done:
	}
	return nil, errNoConns
}

func (s *h2Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	return nil
}

func (s *h2Server) Addr() net.Addr { return s.conn.LocalAddr() }

// serveH2 serves the HTTP/2 connection c of srv, as srv.TLSNextProto["h2"]:
// it returns when c is closed. report is srv's ConnState as the Drainer
// chained it; h is what net/http passes, whose BaseContext, when it has one,
// is the connection's context.
func (d *Drainer) serveH2(srv *http.Server, c *tls.Conn, h http.Handler, report func(net.Conn, http.ConnState)) {
	base := context.Background()
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		base = bc.BaseContext()
	}
	s := &h2Server{conn: c, closed: make(chan struct{}), done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           srv.Handler,
		ReadTimeout:       srv.ReadTimeout,
		ReadHeaderTimeout: srv.ReadHeaderTimeout,
		WriteTimeout:      srv.WriteTimeout,
		IdleTimeout:       srv.IdleTimeout,
		MaxHeaderBytes:    srv.MaxHeaderBytes,
		ErrorLog:          srv.ErrorLog,
		HTTP2:             srv.HTTP2,
		BaseContext:       func(net.Listener) context.Context { return base },

		DisableGeneralOptionsHandler: srv.DisableGeneralOptionsHandler,
		ConnState: func(nc net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				return // srv reported it
			case http.StateClosed:
				// srv reports it again once serveH2 returns: once is enough.
				d.mu.Lock()
				d.h2Closed[nc] = true
				d.mu.Unlock()
				report(nc, st)
				s.doneOnce.Do(func() { close(s.done) })
				return
			}
			report(nc, st)
		},
	}
	d.markH2(c, s)
	_ = s.srv.Serve(s)
	s.mu.Lock()
	accepted := s.accepted
	s.mu.Unlock()
	if accepted {
		<-s.done
	}
}

// goAway sends s's connection a GOAWAY: it finishes the streams it has,
// takes no new one, and closes about a second after its last stream ends.
// It returns at once.
func (s *h2Server) goAway() {
	// With one connection, which net/http counts as active while HTTP/2
	// serves it, Shutdown closes the listener, starts the connection's
	// graceful shutdown in a goroutine, finds nothing idle to close, and
	// returns on the cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.srv.Shutdown(ctx)
}
