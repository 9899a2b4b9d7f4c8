// Command tableflip is the benchmark's baseline: a server upgraded with
// github.com/cloudflare/tableflip exactly as tableflip's README shows it —
// http.Server.Shutdown called right after Exit().
package main

import (
	"context"
	"flag"
	"github.com/handoff-dev/handoff/scripts/bench/servers/internal/pidmux"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidfile := flag.String("pidfile", "", "pid file")
	flag.Parse()

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidfile})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()
	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	server := http.Server{Handler: pidmux.New()}
	go server.Serve(ln)
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()
	time.AfterFunc(30*time.Second, func() { os.Exit(1) })
	_ = server.Shutdown(context.Background())
}
