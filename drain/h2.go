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
// GOAWAY to that connection and touches nothing else. Before it, the drain
// sends a GOAWAY of its own and a PING through the h2Conn that the
// connection's server reads and writes through (see h2conn.go).
//
// Only public API is used, and the same way with Go 1.26 and Go 1.27. The
// server's TLSNextProto hands the connection over: "h2" after a TLS
// handshake that chose it, "unencrypted_http2" for h2c with prior knowledge
// (both releases pass that one through TLSNextProto when the map has an "h2"
// entry, which keeps net/http from setting up an HTTP/2 server of its own).
// The connection's server serves the h2Conn as h2c with prior knowledge,
// from a listener that yields it once: the HTTP/2 server then reads and
// writes through it whether the bytes under it are TLS or not, and the
// handler finds the TLS state in Request.TLS as before, set from the
// connection's.

// errNoConns is what a listener of this file returns once it has nothing
// more to accept.
var errNoConns = errors.New("drain: no more connections to accept")

// noConns is a listener with nothing to accept: serving it makes net/http
// set up a server's HTTP/2 and return.
type noConns struct{}

func (noConns) Accept() (net.Conn, error) { return nil, errNoConns }
func (noConns) Close() error              { return nil }
func (noConns) Addr() net.Addr            { return &net.TCPAddr{} }

// h2Modes reports whether net/http would serve HTTP/2 for srv with its own
// implementation — srv.TLSNextProto unset, HTTP/2 not turned off by
// GODEBUG=http2server=0 — over TLS (srv.Protocols nil or with HTTP2, and
// srv.TLSConfig nil or listing "h2") and as h2c with prior knowledge
// (srv.Protocols with UnencryptedHTTP2); the Drainer can then serve it
// instead. It asks net/http, by setting up a server with the same settings.
func h2Modes(srv *http.Server) (overTLS, h2c bool) {
	if srv.TLSNextProto != nil {
		return false, false
	}
	overTLS, h2c = true, false
	if p := srv.Protocols; p != nil {
		overTLS, h2c = p.HTTP2(), p.UnencryptedHTTP2()
	}
	probe := &http.Server{Protocols: srv.Protocols}
	if srv.TLSConfig != nil {
		if !slices.Contains(srv.TLSConfig.NextProtos, "h2") {
			overTLS = false
		}
		probe.TLSConfig = srv.TLSConfig.Clone()
	}
	if !overTLS && !h2c {
		return false, false
	}
	if err := probe.Serve(noConns{}); !errors.Is(err, errNoConns) {
		return false, false // HTTP/2 refused (e.g. the cipher suites): srv.Serve reports it
	}
	if probe.TLSNextProto["h2"] == nil {
		return false, false // GODEBUG=http2server=0
	}
	return overTLS, h2c
}

// h2Server is the server of one HTTP/2 connection, and its listener.
type h2Server struct {
	srv  *http.Server
	conn net.Conn
	h2   *h2Conn // nil where the drain sends a single GOAWAY (see serveH2)

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

// h2OnlyUnencrypted is the protocol set of a connection's server that
// serves it through an h2Conn.
var h2OnlyUnencrypted = func() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}()

// serveH2 serves the HTTP/2 connection c of srv, as srv.TLSNextProto's "h2"
// or "unencrypted_http2": it returns when c is closed. c is the connection
// srv accepted (a *tls.Conn, or what its listener returned for h2c); tlsState
// is its TLS state, nil for h2c; prefix is what srv has already read of it
// (h2c: the client's preface). handler serves its requests; report is srv's
// ConnState as the Drainer chained it; h is what net/http passes, whose
// BaseContext, when it has one, is the connection's context.
func (d *Drainer) serveH2(srv *http.Server, c net.Conn, tlsState *tls.ConnectionState, prefix []byte, handler, h http.Handler, report func(net.Conn, http.ConnState)) {
	base := context.Background()
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		base = bc.BaseContext()
	}
	s := &h2Server{conn: c, closed: make(chan struct{}), done: make(chan struct{})}
	protocols := h2OnlyUnencrypted
	if tlsState != nil && !h2TLSAdequate(tlsState) {
		// Left to net/http's own checks, which refuse it (RFC 9113,
		// section 9.2), served as before: a *tls.Conn, one GOAWAY.
		protocols = nil
	} else {
		s.h2 = newH2Conn(c, prefix)
		s.conn = s.h2
		if tlsState != nil {
			next := handler
			handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.TLS = tlsState
				next.ServeHTTP(w, r)
			})
		}
	}
	s.srv = &http.Server{
		Handler:           handler,
		ReadTimeout:       srv.ReadTimeout,
		ReadHeaderTimeout: srv.ReadHeaderTimeout,
		WriteTimeout:      srv.WriteTimeout,
		IdleTimeout:       srv.IdleTimeout,
		MaxHeaderBytes:    srv.MaxHeaderBytes,
		ErrorLog:          srv.ErrorLog,
		HTTP2:             srv.HTTP2,
		Protocols:         protocols,
		BaseContext:       func(net.Listener) context.Context { return base },

		DisableGeneralOptionsHandler: srv.DisableGeneralOptionsHandler,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				// srv reported it.
			case http.StateClosed:
				// srv reports it once serveH2 returns.
				s.doneOnce.Do(func() { close(s.done) })
			default:
				report(c, st)
			}
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

// h2TLSAdequate reports whether net/http's HTTP/2 server would serve a
// connection with TLS state st: TLS 1.3, or TLS 1.2 with one of the cipher
// suites RFC 9113 allows (ephemeral key exchange, AEAD) that crypto/tls
// has. The connection's server, serving it as h2c, does not check.
func h2TLSAdequate(st *tls.ConnectionState) bool {
	if st.Version >= tls.VersionTLS13 {
		return true
	}
	if st.Version < tls.VersionTLS12 {
		return false
	}
	switch st.CipherSuite {
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return true
	}
	return false
}

// goAway starts the end of s's connection: the GOAWAY naming stream 2^31-1
// and a PING, then, once the client has answered the PING (ackWait at
// most), the server's own GOAWAY naming the last stream it will serve; it
// serves them and closes about a second after the last ends. It returns at
// once.
func (s *h2Server) goAway() {
	if s.h2 == nil {
		s.shutdown()
		return
	}
	go s.h2.goAwayInTwo(s.shutdown)
}

// shutdown makes s's server send its GOAWAY, naming the last stream it has
// read, and close once those are done.
func (s *h2Server) shutdown() {
	// With one connection, which net/http counts as active while HTTP/2
	// serves it, Shutdown closes the listener, starts the connection's
	// graceful shutdown in a goroutine, finds nothing idle to close, and
	// returns on the cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.srv.Shutdown(ctx)
}
