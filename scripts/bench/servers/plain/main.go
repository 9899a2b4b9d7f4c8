// Command plain is the benchmark's server without handoff: it binds its own
// socket (optionally with SO_REUSEPORT) or serves inherited fds, writes its
// pid file once it listens, and on SIGTERM calls http.Server.Shutdown.
package main

import (
	"context"
	"flag"
	"github.com/handoff-dev/handoff/scripts/bench/servers/internal/pidmux"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidfile := flag.String("pidfile", "", "pid file, written once listening")
	reuseport := flag.Bool("reuseport", false, "bind with SO_REUSEPORT, so that two processes can share the port")
	fd := flag.Int("fd", 0, "serve this inherited listening fd instead of binding")
	fds := flag.Int("fds", 0, "serve this many inherited listening fds, from fd 3 on, instead of binding")
	flag.Parse()

	srv := &http.Server{Handler: pidmux.New()}
	var ln net.Listener
	var err error
	switch {
	case *fds > 0:
		// The last one is served below, the others here.
		for i := 3; i < 2+*fds; i++ {
			l, err := net.FileListener(os.NewFile(uintptr(i), "inherited"))
			if err != nil {
				log.Fatal(err)
			}
			go srv.Serve(l)
		}
		ln, err = net.FileListener(os.NewFile(uintptr(2+*fds), "inherited"))
	case *fd > 0:
		ln, err = net.FileListener(os.NewFile(uintptr(*fd), "inherited"))
	case *reuseport:
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		ln, err = lc.Listen(context.Background(), "tcp", *addr)
	default:
		ln, err = net.Listen("tcp", *addr)
	}
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	if *pidfile != "" {
		tmp := *pidfile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())), 0o644); err == nil {
			_ = os.Rename(tmp, *pidfile)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
