// Command slowready is examples/httpserver's core for tests of a slow start:
// when the file named by -slow exists, a new generation waits 3 s between
// upgrader.New and Ready, logging to stderr every 100 ms meanwhile (which,
// until Ready, is a pipe to the previous generation).
package main

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr, pidfile, slow := "", "", ""
	for i := 1; i+1 < len(os.Args); i += 2 {
		switch os.Args[i] {
		case "-addr":
			addr = os.Args[i+1]
		case "-pidfile":
			pidfile = os.Args[i+1]
		case "-slow":
			slow = os.Args[i+1]
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	u, err := upgrader.New(upgrader.Options{Logger: logger, PIDFile: pidfile})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", addr)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := os.Stat(slow); err == nil {
		for i := range 30 {
			logger.Info("starting slowly", "pid", os.Getpid(), "step", i)
			time.Sleep(100 * time.Millisecond)
		}
	}
	pid := os.Getpid()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})}
	if err := u.Serve(srv, ln); err != nil {
		log.Fatal(err)
	}
}
