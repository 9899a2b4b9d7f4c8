//go:build linux

package upgrader_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestSocketActivationByName starts the server the way a .socket unit with
// FileDescriptorName=web would (through systemd-socket-activate where it is
// installed), asks for systemd:web, and checks that the activated socket is
// served and carried across upgrades.
func TestSocketActivationByName(t *testing.T) {
	spawns(t)
	addr := proc.FreeAddr(t)
	var s *server
	if sa, err := exec.LookPath("systemd-socket-activate"); err == nil {
		s = launch(t, nil, []string{sa, "-l", addr, "--fdname=web"}, "-addr", "systemd:web")
	} else {
		t.Log("systemd-socket-activate not installed; passing LISTEN_FDS from the test")
		s = launchActivated(t, addr, "web", "-addr", "systemd:web")
	}
	s.addr = addr
	// systemd-socket-activate starts the program on the first connection.
	firstReq := make(chan error, 1)
	go func() {
		// Until the activator listens, connections are refused.
		for i := 0; ; i++ {
			resp, err := http.Post("http://"+addr+"/", "text/plain", nil)
			if err == nil {
				resp.Body.Close()
			}
			if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || i == 200 {
				firstReq <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	first := s.waitPid(0, 10*time.Second)
	if err := <-firstReq; err != nil {
		t.Fatalf("first request: %v", err)
	}
	s.waitRecord(5*time.Second, "event=listening", "addr=systemd:web", "source=systemd", "gen=1")

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + addr, Rate: 100})
	if err := load.WaitAnswers(0, 10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	pid := first
	for i := 0; i < 3; i++ {
		s.signal(syscall.SIGHUP)
		old := pid
		pid = s.waitPid(pid, 10*time.Second)
		s.waitExited(old, 15*time.Second) // the load runs on through its drain
		if err := load.WaitAnswers(pid, 20, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	res := load.Wait()
	t.Logf("load: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if n := logrec.Count(s.records(), "event=listening", "addr=systemd:web", "source=inherited"); n != 3 {
		t.Errorf("%d generations inherited systemd:web, want 3:\n%s", n, s.log())
	}
	s.stop()
}

// launchActivated starts the server with ln's socket as fd 3 and LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID set as systemd sets them (LISTEN_PID by a
// shell that then execs the server, keeping its pid).
func launchActivated(t *testing.T, addr, name string, args ...string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s := launchWith(t, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=" + name}, []*os.File{f},
		[]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh"}, args...)
	return s
}

// TestSocketActivationByAddress passes a socket without a name and asks for
// its address: the passed socket is used rather than a fresh bind.
func TestSocketActivationByAddress(t *testing.T) {
	spawns(t)
	addr := proc.FreeAddr(t)
	s := launchActivated(t, addr, "", "-addr", addr)
	s.waitPid(0, 10*time.Second)
	s.waitRecord(5*time.Second, "event=listening", "addr="+addr, "source=systemd")
	resp, err := http.Post("http://"+addr+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.stop()
}

// TestSocketActivationMissingName asks for a name systemd did not pass: the
// server exits 1 with an error that lists the names it did pass.
func TestSocketActivationMissingName(t *testing.T) {
	spawns(t)
	addr := proc.FreeAddr(t)
	s := launchActivated(t, addr, "web", "-addr", "systemd:admin")
	err := s.cmd.Wait()
	if err == nil {
		t.Fatal("server started without the socket it asked for")
	}
	log := s.log()
	for _, w := range []string{"systemd:admin", `no unused socket named "admin"`, "systemd passed: web", "FileDescriptorName=admin"} {
		if !strings.Contains(log, w) {
			t.Errorf("error lacks %q: %s", w, log)
		}
	}
	if n := len(strings.Split(strings.TrimSpace(log), "\n")); n != 1 {
		t.Errorf("error takes %d lines, want 1:\n%s", n, log)
	}
}
