package main

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handover"
	"github.com/handoff-dev/handoff/systemd"
)

// runDaemon serves ws:// under `handoff run --handover`: the first socket
// handoff passed, the connections adopted from the process this one
// replaces, and on the stop signal each connection offered, between two
// frames, to the process replacing this one; one that cannot move is closed
// with 1001 as in library mode. It returns once every connection is gone
// or drainTimeout has passed.
func runDaemon(logger *slog.Logger, drainTimeout time.Duration) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// Before READY=1: handoff learns that this process adopts.
	h, err := handover.New(handover.Options{Logger: logger, HurryAfter: drainTimeout / 2})
	if err != nil {
		log.Fatal(err)
	}
	files := systemd.Activated()
	if len(files) == 0 {
		log.Fatal("websocket: handoff passed no socket: give handoff run --listen HOST:PORT")
	}
	raw, err := net.FileListener(files[0].File)
	if err != nil {
		log.Fatal(err)
	}
	// closing ends if this process stops with no successor that adopts:
	// then every connection closes with 1001. Handing over, package
	// handover gives each its turn.
	closing, closeAll := context.WithCancel(context.Background())
	defer closeAll()
	var conns sync.WaitGroup
	e := &wsEcho{h: h, adopted: h.Adopted(), closing: closing, pid: os.Getpid(), conns: &conns}
	e.background = func(f func()) error {
		conns.Add(1)
		go func() { defer conns.Done(); f() }()
		return nil
	}
	adopted := make(chan struct{})
	go func() { defer close(adopted); e.adopt() }()
	mux := http.NewServeMux()
	mux.Handle("/echo", e)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(h.Listener(raw)) }()
	if _, err := systemd.Ready(""); err != nil {
		log.Fatal(err)
	}
	select {
	case <-stop:
	case err := <-served:
		log.Fatal(err)
	}
	handingOver := h.HandedOver() // true: the turns begin
	logger.Info("stopping", "event", "websocket.stopping", "handing_over", handingOver)
	deadline := time.Now().Add(drainTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if !handingOver {
		closeAll() // every connection's reader wakes up and closes with 1001
	}
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("shutdown", "event", "websocket.shutdown_failed", "err", err)
	}
	select {
	case <-adopted:
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { conns.Wait(); close(done) }()
	select {
	case <-done:
		logger.Info("connections done", "event", "websocket.done")
	case <-ctx.Done():
		logger.Warn("connections left at the drain timeout", "event", "websocket.drain_timeout")
	}
}
