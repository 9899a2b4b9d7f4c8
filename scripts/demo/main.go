// Command demo builds examples/httpserver and runs it on 127.0.0.1:8080 (or
// -addr) with its pid in /tmp/handoff-demo.pid, printing how to upgrade it.
// It ends when the server stops (Ctrl-C or SIGTERM).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidfile := flag.String("pidfile", "/tmp/handoff-demo.pid", "pid file of the serving generation")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "handoff-demo-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "httpserver")
	build := exec.Command("go", "build", "-o", bin, "./examples/httpserver")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		log.Fatalf("demo: building examples/httpserver: %v (run this from the repository root)", err)
	}
	fmt.Printf("serving on http://%s — try:\n  curl -s -X POST http://%s/\n  kill -HUP $(cat %s)   # upgrade with no request lost\n  Ctrl-C                  # drain and stop\n", *addr, *addr, *pidfile)

	// Generations whose parent exited become our children, so that the demo
	// ends only when the last one has.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Fatalf("demo: %v", err)
	}
	cmd := exec.Command(bin, "-addr", *addr, "-pidfile", *pidfile)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Ctrl-C reaches every generation through the terminal; SIGTERM sent to
	// the demo is passed on to the generation that serves.
	signal.Ignore(syscall.SIGINT)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	go func() {
		for range sig {
			if b, err := os.ReadFile(*pidfile); err == nil {
				var pid int
				fmt.Sscan(string(b), &pid)
				if pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		}
	}()
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); err == syscall.ECHILD {
			return
		}
	}
}
