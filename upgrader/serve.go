package upgrader

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// Serve serves HTTP on ln with srv until this generation should exit, then
// drains it. In order: it starts srv on ln, marks the generation ready (see
// Ready), and waits until Exit is closed — the generation handed over or is
// stopping — or srv fails. It then drains (see drain.Drainer.Drain) for at most
// DrainTimeout, or less if a second stop signal cuts it short, logs how it
// went, and returns nil. It returns an error only if Ready or srv failed; on
// such a failure the generation stops. Serve changes srv.Handler,
// srv.ConnState, srv.BaseContext and (for HTTP/2) srv.TLSNextProto as
// drain.Drainer.Serve describes. Use ServeDrainer for several servers.
func (u *Upgrader) Serve(srv *http.Server, ln net.Listener) error {
	d := u.NewDrainer()
	d.Serve(srv, ln)
	return u.ServeDrainer(d)
}

// NewDrainer returns drain.NewDrainer with the Upgrader's IdleGrace and
// Logger, for use with ServeDrainer. Register a hook on it with OnDrain to
// tell WebSocket and other hijacked connections to finish when the drain
// begins.
//
// The Upgrader reads the Drainers it made, and those given to ServeDrainer,
// during an upgrade's bake window (see Options.Bake): the old generation
// pauses them, the new one reports what they answered.
func (u *Upgrader) NewDrainer() *drain.Drainer {
	d := drain.NewDrainer(drain.Options{IdleGrace: u.opts.IdleGrace, Logger: u.log})
	u.addDrainer(d)
	return d
}

// ServeDrainer is Serve for servers already started with d.Serve: it marks the
// generation ready, waits for Exit or a server failure, drains d and returns.
//
//	d := u.NewDrainer()
//	d.Serve(publicSrv, publicLn)
//	d.Serve(adminSrv, adminLn)
//	err := u.ServeDrainer(d)
func (u *Upgrader) ServeDrainer(d *drain.Drainer) error {
	u.addDrainer(d)
	var failure error
	if err := u.Ready(); err != nil {
		failure = err
	} else {
		select {
		case <-u.Exit():
		case err := <-d.Err():
			failure = fmt.Errorf("upgrader: serving: %w", err)
		}
	}
	if failure != nil {
		u.log.Error("stopping", "event", "serve.failed", "err", failure)
		u.requestStop()
	}
	u.drain(d)
	u.finish()
	return failure
}

// drain drains d within DrainTimeout, or until a second stop signal, and logs
// the outcome.
func (u *Upgrader) drain(d *drain.Drainer) {
	deadline := time.Now().Add(u.opts.DrainTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-u.cutC:
			cancel()
		case <-ctx.Done():
		}
	}()
	last := -1
	var lastSent time.Time
	d.OnProgress(func(left int) {
		if left != last && (left == 0 || time.Since(lastSent) >= 100*time.Millisecond) {
			last, lastSent = left, time.Now()
			u.reportDrain(left, deadline)
		}
	})
	if u.opts.MoveIdleConns && u.HandedOver() {
		d.MoveIdle(u.moveIdle)
	}
	open := d.OpenConns()
	jobs := u.jobs.close()
	u.log.Info("draining", "event", "drain.started", "conns", open, "jobs", jobs, "deadline_s", u.opts.DrainTimeout.Seconds())
	st := d.Drain(ctx)
	// Then the background work, within the same deadline.
	cancelled := u.jobs.wait(ctx, jobGrace)
	u.drained.Store(true)
	took := time.Since(deadline.Add(-u.opts.DrainTimeout))
	u.book.drained(took, st, jobs, cancelled)
	if c := u.childCtl.Load(); c != nil {
		b, _ := json.Marshal(drainedMsg{took.Milliseconds(), st, jobs, cancelled})
		_ = c.send("drained %s", b)
	}
	if st.Cut > 0 || cancelled > 0 {
		u.log.Warn("drain cut short", "event", "drain.cut", "cut", st.Cut, "idle_closed", st.IdleClosed, "moved", st.Moved, "go_away", st.GoAway, "hijacked", st.Hijacked,
			"jobs", jobs, "jobs_cancelled", cancelled, "after_ms", took.Milliseconds())
		return
	}
	u.log.Info("drained", "event", "drain.done", "drain_ms", took.Milliseconds(), "conns", st.Conns, "idle_closed", st.IdleClosed, "moved", st.Moved, "go_away", st.GoAway, "hijacked", st.Hijacked, "jobs", jobs)
}

// jobGrace is how long background jobs have to return once their context is
// cancelled at the drain deadline.
const jobGrace = time.Second

// ServeTLS is Serve over TLS, as http.Server.ServeTLS is to Serve: it serves
// HTTPS on ln with a copy of srv.TLSConfig (nil: the defaults), adds HTTP/2
// and HTTP/1.1 to its NextProtos as net/http does (HTTP/2 first, unless
// srv.Protocols leaves it out or srv.TLSNextProto is set to turn it off;
// HTTP/1.1 unless srv.Protocols leaves it out), and loads the certificate from
// certFile and keyFile unless the config already has one (Certificates,
// GetCertificate or GetConfigForClient) and both names are empty. It sets
// srv.TLSConfig to the config it serves with. It returns the certificate's
// error without serving, else as Serve.
func (u *Upgrader) ServeTLS(srv *http.Server, ln net.Listener, certFile, keyFile string) error {
	config := &tls.Config{}
	if srv.TLSConfig != nil {
		config = srv.TLSConfig.Clone()
	}
	h1, h2 := true, srv.TLSNextProto == nil
	if p := srv.Protocols; p != nil {
		h1, h2 = p.HTTP1(), p.HTTP2()
	}
	if h2 && !slices.Contains(config.NextProtos, "h2") {
		config.NextProtos = append([]string{"h2"}, config.NextProtos...)
	}
	if h1 && !slices.Contains(config.NextProtos, "http/1.1") {
		config.NextProtos = append(config.NextProtos, "http/1.1")
	}
	hasCert := len(config.Certificates) > 0 || config.GetCertificate != nil || config.GetConfigForClient != nil
	if !hasCert || certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("upgrader: loading the TLS certificate %s and key %s: %w", certFile, keyFile, err)
		}
		config.Certificates = []tls.Certificate{cert}
	}
	// net/http sets up HTTP/2 in Serve when srv.TLSConfig asks for "h2".
	srv.TLSConfig = config
	return u.Serve(srv, tls.NewListener(ln, config))
}
