package drain_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// The program every Go tutorial teaches — serve, and shut down on SIGTERM —
// without the requests that http.Server.Shutdown loses: it serves on for 5 s
// after the signal while the load balancer deregisters it (/healthz answers
// 503 meanwhile), then drains.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: mux}
	st, err := drain.ListenAndServe(ctx, srv, drain.Options{StopDelay: 5 * time.Second, HealthPath: "/healthz"})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("drained %d connections in %v, %d cut", st.Conns, st.Duration, st.Cut)
}

// One Drainer for two servers, with the Options that Run takes: a public
// server whose WebSocket handlers are told to finish when the drain
// begins, and an admin one.
func ExampleNewDrainer() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	finish := make(chan struct{}) // WebSocket handlers return when it is closed
	d := drain.NewDrainer(drain.Options{IdleGrace: 2 * time.Second, OnDrain: func() { close(finish) }})
	publicLn, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:9090")
	if err != nil {
		log.Fatal(err)
	}
	d.Serve(&http.Server{Handler: http.NotFoundHandler()}, publicLn)
	d.Serve(&http.Server{Handler: http.NotFoundHandler()}, adminLn)

	select {
	case <-ctx.Done():
	case err := <-d.Err():
		log.Print(err)
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain.DefaultTimeout)
	defer cancel()
	st := d.Drain(dctx)
	log.Printf("drained %d connections (%d open now) in %v", st.Conns, d.OpenConns(), st.Duration)
}
