package drain_test

import (
	"context"
	"fmt"
	"log"
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
