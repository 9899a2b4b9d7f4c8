// Command idleserver is an HTTP server with upgrader.Options.MoveIdleConns
// for the tests of idle connections that move: it answers each request
// with its pid. From its environment:
//
//	IDLE_NOFILE=N  in a new generation, RLIMIT_NOFILE's soft limit is N, so
//	               that it refuses the connections it has no descriptor for
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	idleGrace := flag.Duration("idle-grace", time.Second, "how long an idle connection stays open once draining")
	drainTimeout := flag.Duration("drain-timeout", 30*time.Second, "how long the drain may take")
	flag.String("log-format", "json", "ignored: the log is JSON")
	flag.Parse()
	u, err := upgrader.New(upgrader.Options{
		Logger:        slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		PIDFile:       *pidfile,
		IdleGrace:     *idleGrace,
		DrainTimeout:  *drainTimeout,
		MoveIdleConns: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	if n, err := strconv.Atoi(os.Getenv("IDLE_NOFILE")); err == nil && u.HasParent() {
		var lim syscall.Rlimit
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = uint64(n)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Fatal(err)
		}
	}
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}
	pid := os.Getpid()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})}
	if err := u.Serve(srv, ln); err != nil {
		log.Fatal(err)
	}
}
