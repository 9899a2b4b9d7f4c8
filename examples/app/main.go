// Command app is what a Go program needs to run under 'handoff run' (or
// straight from a systemd .socket unit): it takes its listening socket from
// fd 3 (LISTEN_FDS), says READY=1 once it serves, and on SIGTERM finishes
// what it serves before it exits. It answers each request with its pid.
//
//	handoff run --listen web=127.0.0.1:8080 -- ./app
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/handoff-dev/handoff/drain"
)

func main() {
	crashAfter := flag.Duration("crash-after", 0, "exit 1 this long after READY=1 (to test a failing release)")
	flag.Parse()
	log.SetFlags(0)
	fmt.Printf("app: pid=%d LISTEN_PID=%s LISTEN_FDNAMES=%s\n", os.Getpid(), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES"))

	// 1. Take the sockets (and unset LISTEN_*, so no child inherits them).
	listeners, err := activation.Listeners()
	if err != nil || len(listeners) == 0 {
		log.Fatalf("app: no socket passed (%v) — run me under 'handoff run --listen ADDR' or a .socket unit", err)
	}

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

	// 2. Serve; the Drainer tracks connections so that the drain loses none.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	d := drain.NewDrainer(drain.Options{IdleGrace: time.Second})
	for _, ln := range listeners {
		d.Serve(srv, ln)
	}

	// 3. Tell handoff (or systemd) that this generation serves.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Printf("app: sd_notify: %v", err)
	}
	// With WatchdogSec= in the unit: prove liveness every half interval.
	if interval, _ := daemon.SdWatchdogEnabled(false); interval > 0 {
		go func() {
			for range time.Tick(interval / 2) {
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
		}()
	}
	if *crashAfter > 0 {
		time.AfterFunc(*crashAfter, func() { log.Fatal("app: crashing as asked (-crash-after)") })
	}

	// 4. On SIGTERM: stop accepting, finish what is in flight, exit 0.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
	case err := <-d.Err():
		log.Fatalf("app: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	st := d.Drain(ctx)
	fmt.Printf("app: pid=%d drained %d connections in %v (%d idle closed, %d cut)\n", pid, st.Conns, st.Duration.Round(time.Millisecond), st.IdleClosed, st.Cut)
}
