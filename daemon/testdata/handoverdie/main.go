// Command handoverdie is a program for handoff's tests under
// `handoff run --handover`: it adopts connections (package handover) and
// kills itself with SIGKILL when the connection numbered $DIE_AT (17 by
// default) is offered to it, mid-handover, before any commit of that batch;
// with HANG=1 it hangs there instead, reading no more of its channel;
// DIE_AT=0: never. NOFILE=N lowers its RLIMIT_NOFILE to N at start, so that
// it runs out of descriptors while connections arrive. The connections it
// adopts it closes at once.
// It accepts and closes new connections, says READY=1, and exits on SIGTERM.
package main

import (
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/handoff-dev/handoff/handover"
	"github.com/handoff-dev/handoff/systemd"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	at, err := strconv.Atoi(os.Getenv("DIE_AT"))
	if err != nil {
		at = 17
	}
	if n, err := strconv.Atoi(os.Getenv("NOFILE")); err == nil {
		lim := syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Fatal(err)
		}
	}
	seen := 0
	h, err := handover.New(handover.Options{Check: func([]byte) error {
		if seen++; seen == at {
			if os.Getenv("HANG") != "1" {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			select {}
		}
		return nil
	}})
	if err != nil {
		log.Fatal(err)
	}
	files := systemd.Activated()
	if len(files) == 0 {
		log.Fatal("handoverdie: no socket")
	}
	ln, err := net.FileListener(files[0].File)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go func() {
		for a := range h.Adopted() {
			a.Conn.Close()
		}
	}()
	if _, err := systemd.Ready(""); err != nil {
		log.Fatal(err)
	}
	<-stop
}
