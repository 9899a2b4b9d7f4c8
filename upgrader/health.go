package upgrader

import (
	"errors"
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

// ErrPID1 is why a process that is PID 1 — a container's entrypoint — does
// not upgrade: the old generation exits after the handover, and PID 1's exit
// ends the container with every process in it.
var ErrPID1 = errors.New("upgrader: this process is PID 1 (a container's entrypoint), and its exit after a handover would end the container — " +
	"roll out a new container instead, or run the program under `handoff run` as the entrypoint; SIGTERM still drains")

// canUpgrade returns nil where this generation can upgrade, else why not.
func (u *Upgrader) canUpgrade() error {
	if err := u.core.CanUpgrade(); err != nil {
		return err
	}
	if os.Getpid() == 1 {
		return ErrPID1
	}
	return nil
}
