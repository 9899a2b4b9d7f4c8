package upgrader

import (
	"fmt"
	"net/http"
	"os"
)

// Health returns an http.Handler for a load balancer's readiness check: it
// answers 200 while this generation serves, and 503 from the moment a stop is
// asked — through the stop delay (Options.StopDelay) and the drain — so that
// a load balancer that polls it deregisters this instance before it stops
// accepting. A handover is not a stop: the new generation serves the same
// sockets, and answers 200. The body is one line saying which.
func (u *Upgrader) Health() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if u.stopAsked.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "stopping: generation %d (pid %d)\n", u.gen, os.Getpid())
			return
		}
		fmt.Fprintf(w, "serving: generation %d (pid %d)\n", u.gen, os.Getpid())
	})
}
