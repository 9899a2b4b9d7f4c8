// Command sse streams server-sent events and ends each stream when its
// generation begins to drain, so that clients reconnect to the new
// generation at once instead of at the drain deadline:
//
//	go build -o /tmp/sse ./examples/sse
//	/tmp/sse -addr 127.0.0.1:8080 -pidfile /tmp/sse.pid &
//	curl -N 127.0.0.1:8080/events       # data: pid=1234 …
//	kill -HUP $(cat /tmp/sse.pid)       # the stream ends with "event: bye"
//
// The pattern for any long-lived handler (long polls, streams): select on
// the Upgrader's Exit next to the request's context.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	every := flag.Duration("every", 100*time.Millisecond, "interval between events")
	flag.Parse()
	log.SetFlags(0)

	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		// Ask EventSource clients to reconnect after 100 ms, not 3 s.
		fmt.Fprint(w, "retry: 100\n\n")
		_ = rc.Flush()
		tick := time.NewTicker(*every)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return // the client left
			case <-u.Exit():
				// This generation drains: end the stream; the client
				// reconnects, and the new generation answers.
				fmt.Fprint(w, "event: bye\ndata: reconnect\n\n")
				_ = rc.Flush()
				return
			case t := <-tick.C:
				fmt.Fprintf(w, "data: pid=%d %s\n\n", pid, t.Format(time.RFC3339Nano))
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := u.Serve(srv, ln); err != nil {
		log.Fatal(err)
	}
}
