package drain

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// DefaultTimeout is how long a drain lasts at most when no timeout is
// given: Run's when Options.Timeout is zero, and an upgrader generation's
// when upgrader.Options.DrainTimeout is zero.
const DefaultTimeout = 30 * time.Second

// Options configures NewDrainer, Run and ListenAndServe. NewDrainer uses
// IdleGrace, OnDrain and Logger; Run and ListenAndServe use every field. The
// zero value drains at once when ctx is done, for at most DefaultTimeout.
type Options struct {
	// StopDelay, if positive, is how long the server keeps serving — and
	// accepting — once ctx is done, before it drains: the time a load
	// balancer takes to stop sending to an instance that is going away
	// (docker stop, a Kubernetes pod leaving its Service, an ECS task
	// deregistering). HealthPath answers 503 meanwhile.
	StopDelay time.Duration
	// Timeout bounds the drain: requests still running then have their
	// contexts cancelled, and their connections are closed half a second
	// later. Default DefaultTimeout.
	Timeout time.Duration
	// IdleGrace is how long a connection must have been idle, with nothing
	// received, before the drain closes it. Default DefaultIdleGrace.
	IdleGrace time.Duration
	// HealthPath, if not empty, is a path that Run answers itself, for a
	// load balancer's health check: 200 while serving, 503 from the end of
	// ctx on, through the stop delay and the drain.
	HealthPath string
	// OnDrain, if set, is called in its own goroutine when the drain
	// begins (see Drainer.OnDrain).
	OnDrain func()
	// Logger, if set, gets Run's line when the stop begins and the one with
	// the drain's figures when it ends, and the Drainer's warnings.
	Logger *slog.Logger
}

// Run serves srv on ln until ctx is done, then stops without losing a
// request, and returns how the drain went. In order: it serves (changing
// srv as Drainer.Serve describes, and answering Options.HealthPath); once
// ctx is done it serves on for Options.StopDelay, with the health path
// answering 503; then it drains (see Drainer.Drain) for at most
// Options.Timeout, and returns. If srv fails before ctx is done, Run drains
// at once and returns the failure with the figures.
//
// With signal.NotifyContext, this is the whole of a server that loses
// nothing when it is stopped (see the package example).
func Run(ctx context.Context, srv *http.Server, ln net.Listener, opts Options) (Stats, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stopping := make(chan struct{})
	if opts.HealthPath != "" {
		next := srv.Handler
		if next == nil {
			next = http.DefaultServeMux
		}
		srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != opts.HealthPath {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			select {
			case <-stopping:
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "stopping (pid %d)\n", os.Getpid())
			default:
				fmt.Fprintf(w, "serving (pid %d)\n", os.Getpid())
			}
		})
	}
	opts.Logger = log
	d := NewDrainer(opts)
	d.Serve(srv, ln)

	var failure error
	select {
	case <-ctx.Done():
		close(stopping)
		log.Info("stop asked", "event", "stop.asked", "stop_delay", opts.StopDelay.String(), "conns", d.OpenConns(), "pid", os.Getpid())
		if opts.StopDelay > 0 {
			t := time.NewTimer(opts.StopDelay)
			select {
			case <-t.C:
			case failure = <-d.Err():
				t.Stop()
			}
		}
	case failure = <-d.Err():
		close(stopping)
	}
	if failure != nil {
		failure = fmt.Errorf("drain: serving %s: %w", ln.Addr(), failure)
		log.Error("serving failed; draining", "event", "serve.failed", "err", failure, "pid", os.Getpid())
	}
	dctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	st := d.Drain(dctx)
	level := slog.LevelInfo
	if st.Cut > 0 {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "drained", "event", "drain.done", "drain_ms", st.Duration.Milliseconds(), "conns", st.Conns,
		"idle_closed", st.IdleClosed, "go_away", st.GoAway, "hijacked", st.Hijacked, "cut", st.Cut, "pid", os.Getpid())
	return st, failure
}

// ListenAndServe is Run on a TCP listener bound to srv.Addr (":http" if
// empty). It returns the bind's error, wrapped, without serving.
func ListenAndServe(ctx context.Context, srv *http.Server, opts Options) (Stats, error) {
	addr := srv.Addr
	if addr == "" {
		addr = ":http"
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // as the rest of handoff binds: plain TCP
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return Stats{}, fmt.Errorf("drain: %w", err)
	}
	return Run(ctx, srv, ln, opts)
}
