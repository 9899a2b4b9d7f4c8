// Command lines is a line protocol over raw TCP whose connections survive a
// release: each line a client sends is a request, answered in order with
// "COUNT PID LINE" — COUNT the number of lines this connection has sent so
// far (the connection's state), PID the process that answered. Clients may
// pipeline as many lines as they like.
//
// On SIGHUP the next generation starts (package upgrader); when this one
// hands over, each connection stops reading between two lines and is
// offered to the new generation with its count and the bytes read but not
// yet answered (upgrader.Handover). The new generation adopts it and answers
// on, counting on: the client sees no close, no reconnect, no line lost or
// answered twice, only another PID. A connection that cannot move (the new
// generation refused it, or died mid-way) is drained as before: answered on
// by this generation until -drain-timeout, then closed.
//
//	go build -o /tmp/lines . && /tmp/lines -addr 127.0.0.1:7000 -pidfile /tmp/lines.pid &
//	(for i in $(seq 1 1000); do echo $i; sleep 0.01; done) | nc 127.0.0.1 7000 &
//	kill -HUP $(cat /tmp/lines.pid)
//
// Under `handoff run --handover` (daemon mode, found by
// $HANDOFF_HANDOVER_FDS) it serves the first socket handoff passed, says
// READY=1, and on its stop signal offers its connections to the process
// that replaces it (package handover) if that one adopts, and drains them
// otherwise; -addr and -pidfile are not used:
//
//	handoff run --handover --listen 127.0.0.1:7000 -- /tmp/lines &
//	handoff reload
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

// maxLine bounds a line; a longer one ends the connection.
const maxLine = 16 << 10

func main() {
	addr := flag.String("addr", "127.0.0.1:7000", "address to serve on")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	drainTimeout := flag.Duration("drain-timeout", 10*time.Second, "how long connections that do not move are served on once this generation hands over or stops")
	turns := flag.Int("handover-turns", 0, "how many connections stop to be offered at once when this generation hands over, the others served on meanwhile (0: upgrader.DefaultHandoverTurns)")
	logFormat := flag.String("log-format", "text", "log lines as text (key=value) or json")
	flag.Parse()
	var logger *slog.Logger
	switch *logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	case "json":
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	default:
		fmt.Fprintf(os.Stderr, "lines: -log-format %q: use text or json\n", *logFormat)
		os.Exit(2)
	}

	if _, ok := os.LookupEnv(upgrader.HandoverChannelsEnv); ok {
		runDaemon(logger, *drainTimeout, *turns)
		return
	}
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: logger, DrainTimeout: *drainTimeout})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	// Before Ready: a new generation tells the old one it adopts.
	h := u.Handover(upgrader.HandoverOptions{Turns: *turns})
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}
	ln = h.Listener(ln) // connections that can be offered

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
			if err != nil { // out of descriptors, say: try again
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.wg.Add(1)
			go s.serve(c, 0, nil)
		}
	}()
	if err := u.Ready(); err != nil {
		log.Fatal(err)
	}

	<-u.Exit()
	s.finish(logger, ln, *drainTimeout, accepted, adopted)
}

// finish hands over or drains every connection once this generation
// stops, and logs what became of them.
func (s *server) finish(logger *slog.Logger, ln net.Listener, drainTimeout time.Duration, accepted, adopted <-chan struct{}) {
	deadline := time.Now().Add(drainTimeout)
	s.deadline.Store(deadline.UnixNano())
	s.exit() // every connection's reader wakes up: hand over, or drain
	ln.Close()
	<-accepted
	select {
	case <-adopted:
	case <-time.After(time.Until(deadline)):
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) + time.Second):
	}
	logger.Info("connections done", "event", "lines.done", "handed_over", s.movedOut.Load(), "drained", s.drained.Load())
}

// offerer is what serve needs of a handover: upgrader.Handover in library
// mode, handover.Handover under handoff run.
type offerer interface {
	Offer(c net.Conn, state, unread []byte) error
	OnTurn(c net.Conn, f func()) (stop func() bool)
	HandedOver() bool
}

type server struct {
	h        offerer
	pid      int
	exiting  context.Context
	exit     context.CancelFunc
	deadline atomic.Int64 // of the drain, UnixNano
	wg       sync.WaitGroup

	movedOut, drained atomic.Int64
}

// serve answers c's lines in order, from count on, starting with the bytes
// in pending (read by a previous generation, not yet answered).
func (s *server) serve(c net.Conn, count uint64, pending []byte) {
	defer s.wg.Done()
	// Wake the reader, so that it stops between two lines, when this
	// connection's turn to be offered comes (handing over, the others are
	// served on meanwhile: each pauses for its own batch only), or when
	// this generation stops without handing over.
	var stopped atomic.Bool
	interrupt := func() { stopped.Store(true); _ = c.SetReadDeadline(time.Now()) }
	stopTurn := s.h.OnTurn(c, interrupt)
	defer stopTurn()
	stop := context.AfterFunc(s.exiting, func() {
		if !s.h.HandedOver() {
			interrupt()
		}
	})
	defer stop()
	buf := append(make([]byte, 0, 4096), pending...)
	out := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	draining := false
	for {
		// Answer every whole line, in one write.
		rest := buf
		for {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				break
			}
			count++
			out = fmt.Appendf(out, "%d %d %s\n", count, s.pid, rest[:i])
			rest = rest[i+1:]
		}
		buf = append(buf[:0], rest...)
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				c.Close()
				return
			}
			out = out[:0]
		}
		if len(buf) > maxLine {
			c.Close()
			return
		}
		if stopped.Load() && !draining {
			// Between two lines, no Read in progress: offer it with its
			// count and the part of a line read so far.
			if err := s.h.Offer(c, binary.AppendUvarint(nil, count), buf); err == nil {
				s.movedOut.Add(1)
				return
			}
			draining = true
			s.drained.Add(1)
		}
		if draining {
			_ = c.SetReadDeadline(time.Unix(0, s.deadline.Load()))
		}
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && (!draining || time.Now().UnixNano() < s.deadline.Load()) {
				continue // woken to hand over
			}
			c.Close()
			return
		}
	}
}
