// Command shutdown is the server every Go tutorial teaches — serve, and shut
// down on SIGTERM — with package drain instead of http.Server.Shutdown: it
// answers each request with its pid (/slow?d=2s after that long), serves on
// for -stop-delay after SIGTERM or SIGINT while a load balancer deregisters
// it (/healthz answers 503 meanwhile), then drains without losing a request,
// and exits 0.
//
//	go run ./examples/shutdown -addr 127.0.0.1:8080 -stop-delay 5s
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	stopDelay := flag.Duration("stop-delay", 5*time.Second, "how long to serve on after SIGTERM, before draining")
	timeout := flag.Duration("drain-timeout", 30*time.Second, "how long the drain may last")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(min(d, time.Minute))
		fmt.Fprintf(w, "pid=%d\n", pid)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	_, err := drain.ListenAndServe(ctx, srv, drain.Options{StopDelay: *stopDelay, Timeout: *timeout, HealthPath: "/healthz", Logger: log})
	if err != nil {
		log.Error("serving failed", "err", err)
		os.Exit(1)
	}
}
