// Command handoverfault is examples/lines with the knobs the handover's
// fault tests need, from the environment:
//
//	HOF_BATCH=N        HandoverOptions.Batch
//	HOF_STALL_AFTER=K  in a new generation, Check blocks (logging test.stalled)
//	                   until the parent is gone, at the first connection past
//	                   the K-th that follows a commit and one more connection:
//	                   some connections are then adopted, some prepared and not
//	                   committed (offer more than 8 batches: the old generation
//	                   sends the 9th only after it committed the first)
//	HOF_NOFILE=N       in a new generation, RLIMIT_NOFILE's soft limit is N
//	HOF_EXIT_AT_CLOSE=N in a first generation, the N-th close of a
//	                   connection it accepted exits the process at once
//	                   (logging test.exit_at_close), in the goroutine that
//	                   closes it: the worst case of a program that exits
//	                   once its connections are closed, as Upgrader.Serve's
//	                   drain lets one do
//
// and from its clients: a line "pad N" adds N bytes to the connection's
// state; a line "racy" makes this generation offer the connection, when it
// hands over, from another goroutine while its reader is still in Read.
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

// maxLine bounds a line; a longer one ends the connection.
const maxLine = 16 << 10

func main() {
	addr := flag.String("addr", "127.0.0.1:7000", "address to serve on")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	drainTimeout := flag.Duration("drain-timeout", 10*time.Second, "how long connections that do not move are served on once this generation hands over or stops")
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
	commits := commitWatch{Handler: logger.Handler(), n: new(atomic.Int64)}
	logger = slog.New(commits)

	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: logger, DrainTimeout: *drainTimeout})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	// Before Ready: a new generation tells the old one it adopts.
	opts := upgrader.HandoverOptions{}
	opts.Batch, _ = strconv.Atoi(os.Getenv("HOF_BATCH"))
	if k, err := strconv.Atoi(os.Getenv("HOF_STALL_AFTER")); err == nil {
		// Check runs in the handover's goroutine, which also reads the
		// commits and logs handover.commit (Debug) for each before it reads on:
		// commits.n says, in order, how many commits it has read.
		ppid, seen, commitsAt, sinceCommit := os.Getppid(), 0, int64(0), 0
		opts.Check = func([]byte) error {
			seen++
			if n := commits.n.Load(); n != commitsAt {
				commitsAt, sinceCommit = n, 0
			}
			if seen > k && commitsAt > 0 && sinceCommit > 0 {
				logger.Info("stalled", "event", "test.stalled", "after", seen-1, "commits", commitsAt, "prepared", sinceCommit, "pid", os.Getpid())
				for os.Getppid() == ppid {
					time.Sleep(10 * time.Millisecond)
				}
			}
			sinceCommit++
			return nil
		}
	}
	if n, err := strconv.Atoi(os.Getenv("HOF_NOFILE")); err == nil && u.HasParent() {
		var lim syscall.Rlimit
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = uint64(n)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Fatal(err)
		}
	}
	h := u.Handover(opts)
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}
	ln = h.Listener(ln) // connections that can be offered

	var closes *exitAtClose
	if n, err := strconv.Atoi(os.Getenv("HOF_EXIT_AT_CLOSE")); err == nil && !u.HasParent() {
		closes = &exitAtClose{n: int64(n), log: logger}
	}
	s := &server{h: h, pid: os.Getpid()}
	s.exiting, s.exit = context.WithCancel(context.Background())
	adopted := make(chan struct{})
	go func() {
		defer close(adopted)
		for a := range h.Adopted() {
			count, k := binary.Uvarint(a.State)
			s.wg.Add(1)
			go s.serve(a.Conn, count, a.Unread, len(a.State)-k)
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
			if closes != nil {
				c = &closeWatch{Conn: c, e: closes}
			}
			s.wg.Add(1)
			go s.serve(c, 0, nil, 0)
		}
	}()
	if err := u.Ready(); err != nil {
		log.Fatal(err)
	}

	<-u.Exit()
	deadline := time.Now().Add(*drainTimeout)
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

type server struct {
	h        *upgrader.Handover
	pid      int
	exiting  context.Context
	exit     context.CancelFunc
	deadline atomic.Int64 // of the drain, UnixNano
	wg       sync.WaitGroup

	movedOut, drained atomic.Int64
}

// serve answers c's lines in order, from count on, starting with the bytes
// in pending (read by a previous generation, not yet answered).
func (s *server) serve(c net.Conn, count uint64, pending []byte, pad int) {
	defer s.wg.Done()
	var racy atomic.Bool
	stop := context.AfterFunc(s.exiting, func() {
		if !racy.Load() {
			_ = c.SetReadDeadline(time.Now())
			return
		}
		// A program's mistake: offered while its reader is in Read.
		if err := s.h.Offer(c, binary.AppendUvarint(nil, count), nil); err == nil {
			panic("offered a connection in use")
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
			line := string(rest[:i])
			if n, ok := strings.CutPrefix(line, "pad "); ok {
				pad, _ = strconv.Atoi(n)
			}
			if line == "racy" {
				racy.Store(true)
			}
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
		if s.exiting.Err() != nil && !draining && racy.Load() {
			draining = true
			s.drained.Add(1)
		}
		if s.exiting.Err() != nil && !draining {
			// Between two lines, no Read in progress: offer it with its
			// count and the part of a line read so far.
			if err := s.h.Offer(c, append(binary.AppendUvarint(nil, count), make([]byte, pad)...), buf); err == nil {
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

// commitWatch counts the handover.commit records (Debug) logged through
// it, or through the handlers its With methods make: the commits the new
// generation has read. It passes on the records its handler takes.
type commitWatch struct {
	slog.Handler
	n *atomic.Int64
}

func (w commitWatch) Enabled(context.Context, slog.Level) bool { return true }

func (w commitWatch) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "event" && a.Value.String() == "handover.commit" {
			w.n.Add(1)
			return false
		}
		return true
	})
	if !w.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return w.Handler.Handle(ctx, r)
}

func (w commitWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return commitWatch{Handler: w.Handler.WithAttrs(as), n: w.n}
}

func (w commitWatch) WithGroup(name string) slog.Handler {
	return commitWatch{Handler: w.Handler.WithGroup(name), n: w.n}
}

// exitAtClose exits the process at the n-th close of a closeWatch.
type exitAtClose struct {
	n      int64
	closed atomic.Int64
	log    *slog.Logger
}

// closeWatch is an accepted connection under HOF_EXIT_AT_CLOSE; Unwrap
// lets Offer find the tracked connection beneath.
type closeWatch struct {
	net.Conn
	e    *exitAtClose
	once sync.Once
}

func (c *closeWatch) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.e.closed.Add(1) == c.e.n {
			c.e.log.Info("exiting at the last close", "event", "test.exit_at_close", "closed", c.e.n, "pid", os.Getpid())
			os.Exit(0)
		}
	})
	return err
}

func (c *closeWatch) Unwrap() net.Conn { return c.Conn }
