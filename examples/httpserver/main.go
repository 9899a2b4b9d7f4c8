// Command httpserver is the smallest hot-restartable HTTP server: it answers
// each request with its pid, upgrades itself on SIGHUP without losing a
// request, and drains on SIGTERM.
//
//	go build -o /tmp/httpserver ./examples/httpserver
//	/tmp/httpserver -addr 127.0.0.1:8080 -pidfile /tmp/httpserver.pid &
//	curl -s 127.0.0.1:8080/             # pid=1234
//	kill -HUP $(cat /tmp/httpserver.pid)
//	curl -s 127.0.0.1:8080/             # pid=1240
//	curl -s '127.0.0.1:8080/slow?d=2s'  # answers after 2s
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/drain"
	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addrs := flag.String("addr", "127.0.0.1:8080", "addresses to serve on, comma-separated: HOST:PORT, unix:///path, systemd:NAME")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	upgradeTimeout := flag.Duration("upgrade-timeout", upgrader.DefaultUpgradeTimeout, "how long a new generation may take to become ready")
	drainTimeout := flag.Duration("drain-timeout", drain.DefaultTimeout, "how long requests in flight may take once draining")
	idleGrace := flag.Duration("idle-grace", drain.DefaultIdleGrace, "how long an idle connection stays open once draining")
	stopDelay := flag.Duration("stop-delay", 0, "how long to serve on after SIGTERM before draining, for a load balancer to deregister this instance")
	bake := flag.Duration("bake", upgrader.DefaultBake, "how long a new generation has, once ready, to prove it serves before this one hands over; negative: no bake")
	logFormat := flag.String("log-format", "text", "log lines as text (key=value) or json")
	fdstore := flag.Bool("fdstore", false, "store the sockets in systemd's fd store (on by itself where systemd sets $FDSTORE)")
	moveIdle := flag.Bool("move-idle", false, "at an upgrade, hand idle keep-alive connections to the new generation instead of closing them (set it in both)")
	flag.Parse()
	log.SetFlags(0)
	var logger *slog.Logger // nil: the upgrader's default, text on stderr
	switch *logFormat {
	case "text":
	case "json":
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	default:
		log.Fatalf("httpserver: -log-format %q: use text or json", *logFormat)
	}

	u, err := upgrader.New(upgrader.Options{
		Logger:         logger,
		PIDFile:        *pidfile,
		UpgradeTimeout: *upgradeTimeout,
		DrainTimeout:   *drainTimeout,
		IdleGrace:      *idleGrace,
		FDStore:        *fdstore,
		StopDelay:      *stopDelay,
		Bake:           *bake,
		MoveIdleConns:  *moveIdle,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()

	var lns []net.Listener
	for _, addr := range strings.Split(*addrs, ",") {
		ln, err := u.Listen("", addr)
		if err != nil {
			log.Fatal(err)
		}
		lns = append(lns, ln)
	}

	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})
	// For a load balancer's readiness check: 503 once a stop is asked.
	mux.Handle("/healthz", u.Health())
	// Upgrades and drains for Prometheus, counted since the program
	// started (each generation hands its counters on).
	mux.Handle("GET /metrics", u.MetricsHandler())
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 || d > time.Minute {
			http.Error(w, "d must be a duration up to 1m, as in /slow?d=2s", http.StatusBadRequest)
			return
		}
		time.Sleep(d)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if len(lns) == 1 {
		if err := u.Serve(srv, lns[0]); err != nil {
			log.Fatal(err)
		}
		return
	}
	// Several sockets: one Drainer for all, so that one drain covers them.
	d := u.NewDrainer()
	for _, ln := range lns {
		d.Serve(srv, ln)
	}
	if err := u.ServeDrainer(d); err != nil {
		log.Fatal(err)
	}
}
