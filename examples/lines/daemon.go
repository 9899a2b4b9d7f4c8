package main

import (
	"context"
	"encoding/binary"
	"errors"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handover"
	"github.com/handoff-dev/handoff/systemd"
)

// runDaemon serves under `handoff run --handover`: the first socket handoff
// passed, connections adopted from the process this one replaces, and on
// the stop signal each connection offered to the process replacing this
// one, or drained.
func runDaemon(logger *slog.Logger, drainTimeout time.Duration, turns int) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// Before READY=1: handoff learns that this process adopts.
	h, err := handover.New(handover.Options{Logger: logger, Turns: turns, HurryAfter: drainTimeout / 2})
	if err != nil {
		log.Fatal(err)
	}
	files := systemd.Activated()
	if len(files) == 0 {
		log.Fatal("lines: handoff passed no socket: give handoff run --listen HOST:PORT")
	}
	raw, err := net.FileListener(files[0].File)
	if err != nil {
		log.Fatal(err)
	}
	ln := h.Listener(raw)

	s := &server{h: h, pid: os.Getpid()}
	s.exiting, s.exit = context.WithCancel(context.Background())
	adopted := make(chan struct{})
	go func() {
		defer close(adopted)
		for a := range h.Adopted() {
			count, _ := binary.Uvarint(a.State)
			s.wg.Add(1)
			go s.serve(a.Conn, count, a.Unread)
		}
	}()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.wg.Add(1)
			go s.serve(c, 0, nil)
		}
	}()
	if _, err := systemd.Ready(""); err != nil {
		log.Fatal(err)
	}
	<-stop
	logger.Info("stopping", "event", "lines.stopping", "handing_over", h.HandedOver())
	s.finish(logger, ln, drainTimeout, accepted, adopted)
}
