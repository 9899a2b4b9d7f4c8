//go:build linux

package daemon_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// TestHandoffKilled kills `handoff run --hold 0` with SIGKILL while a
// request is in flight: the generation gets its stop signal and drains — the
// request completes, and what it prints meanwhile still reaches handoff's
// output (a Go program would die of SIGPIPE writing to a pipe nobody reads)
// — then it exits, nothing is left (the keeper holds no socket), and a new
// handoff with another control socket binds the address and serves.
// hold_test.go has the default: a hold, and a handoff that takes the sockets.
func TestHandoffKilled(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil, "--hold", "0")
	gen := d.serving()
	fds := proc.FDCount(gen)
	slow := d.postSlow(time.Second)
	// Once the generation holds the request's connection:
	for wait := time.Now().Add(5 * time.Second); proc.FDCount(gen) <= fds && time.Now().Before(wait); {
		time.Sleep(5 * time.Millisecond)
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	if err := <-slow; err != nil {
		t.Errorf("the request in flight when handoff was killed: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for proc.Alive(gen) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if proc.Alive(gen) {
		t.Fatalf("the generation (pid %d) serves on, unmanaged, after handoff was killed", gen)
	}
	// Its last words went through the keeper to handoff's output.
	for !strings.Contains(d.log(), "drained 1 connections") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(d.log(), "drained 1 connections") {
		t.Errorf("the generation's drain line did not reach handoff's output:\n%s", d.log())
	}
	for len(proc.Descendants(os.Getpid())) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if left := proc.Descendants(os.Getpid()); len(left) > 0 {
		t.Errorf("left running after handoff was killed: %v", left)
	}
	proc.ReapAll()

	// A handoff started again binds the same address.
	again := exec.Command(handoffBin, "run", "--control", filepath.Join(t.TempDir(), "c.sock"), "--listen", "web="+d.addr, "--", d.prog)
	again.Stdout, again.Stderr = os.Stderr, os.Stderr
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = again.Process.Signal(syscall.SIGTERM); _ = again.Wait() }()
	for time.Now().Before(deadline) {
		if resp, err := http.Post("http://"+d.addr+"/", "text/plain", nil); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("a new handoff on %s does not serve", d.addr)
}
