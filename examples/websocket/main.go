// Command websocket is an echo server over WebSocket. Over ws:// (no -cert:
// behind a load balancer that terminates TLS) its connections survive a
// release: when its generation hands over, each connection moves, between
// two frames, to the new generation, which echoes on (upgrader.Handover; the
// frames are read by hand, see ws.go). Over wss:// it is written as a user
// would with a maintained library (github.com/coder/websocket) and hands
// over without losing a message the way it can, since a TLS session cannot
// move: when its generation begins to drain it closes every connection with
// 1001 "going away", and clients reconnect to the new generation at once.
// -handover=false makes ws:// do the same (the baseline the benchmark
// compares the handover with: go run ./scripts/bench --only handover).
//
//	go build -o /tmp/ws . && /tmp/ws -addr 127.0.0.1:8443 -cert cert.pem -key key.pem -pidfile /tmp/ws.pid
//	kill -HUP $(cat /tmp/ws.pid)
//
// Under `handoff run --handover` (daemon mode, found by
// $HANDOFF_HANDOVER_FDS) it serves ws:// on the first socket handoff passed,
// says READY=1, and on its stop signal offers its connections to the process
// that replaces it (package handover), closing with 1001 those that cannot
// move; -addr and -pidfile are not used:
//
//	handoff run --handover --listen 127.0.0.1:8080 -- /tmp/ws
//	handoff reload
//
// It is its own module, so that the handoff module does not depend on a
// WebSocket library.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/coder/websocket"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "address to serve on")
	cert := flag.String("cert", "", "TLS certificate file (PEM); without it, plain ws://")
	key := flag.String("key", "", "TLS key file (PEM)")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	handover := flag.Bool("handover", true, "over ws://, move connections to the new generation at a release; false: close them with 1001 (going away) and let clients reconnect")
	logFormat := flag.String("log-format", "text", "log lines as text (key=value) or json")
	flag.Parse()
	log.SetFlags(0)
	var logger *slog.Logger
	switch *logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	case "json":
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	default:
		fmt.Fprintf(os.Stderr, "websocket: -log-format %q: use text or json\n", *logFormat)
		os.Exit(2)
	}

	if _, ok := os.LookupEnv(upgrader.HandoverChannelsEnv); ok {
		if *cert != "" || !*handover {
			fmt.Fprintln(os.Stderr, "websocket: under handoff run --handover it serves ws:// and hands over: drop -cert and -handover=false, or run it without --handover")
			os.Exit(2)
		}
		runDaemon(logger, 10*time.Second)
		return
	}
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: logger, DrainTimeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}
	pid := os.Getpid()
	draining := drained(u)
	mux := http.NewServeMux()
	if *cert == "" {
		e := &wsEcho{pid: pid}
		if !*handover {
			e.closing = draining
		} else {
			// Handing over, OnTurn interrupts each reader in turn; stopping
			// without a successor that adopts, it interrupts them all.
			// Before Ready: a new generation tells the old one it adopts.
			h := u.Handover(upgrader.HandoverOptions{})
			e.h, e.adopted = h, h.Adopted()
			e.background = func(f func()) error {
				return u.Go(func(context.Context) error { f(); return nil })
			}
			ln = h.Listener(ln)
			go e.adopt()
		}
		mux.Handle("/echo", e)
	} else {
		mux.HandleFunc("/echo", echoTLS(draining, pid))
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if *cert != "" {
		err = u.ServeTLS(srv, ln, *cert, *key)
	} else {
		err = u.Serve(srv, ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// echoTLS is the wss:// handler, on coder/websocket: it closes with 1001 when
// the generation drains.
func echoTLS(draining context.Context, pid int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		// When this generation drains, say so; the client reconnects and
		// the new generation answers. Messages that arrive after the close
		// frame are not echoed: the client sends them again.
		stop := context.AfterFunc(draining, func() {
			_ = c.Close(websocket.StatusGoingAway, fmt.Sprintf("pid %d hands over", pid))
		})
		defer stop()
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, append([]byte(fmt.Sprintf("pid=%d ", pid)), msg...)); err != nil {
				return
			}
		}
	}
}

// drained returns a context that ends when u's generation begins to drain.
func drained(u *upgrader.Upgrader) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-u.Exit(); cancel() }()
	return ctx
}
