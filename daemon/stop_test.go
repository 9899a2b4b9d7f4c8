//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon"
	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestStopRefusesNotResets stops handoff under load while slow requests keep
// the generation draining: connections that arrive once it has stopped
// accepting are refused (the client knows nothing was sent), none is
// accepted by the kernel only to be reset when handoff exits, and the
// requests in flight complete. Also when the stop comes during a reload, and
// with a program that stops accepting at once but holds its socket for a
// while before it exits.
func TestStopRefusesNotResets(t *testing.T) {
	alongside(t)
	lingering := lingeringServer(t, "0.6")
	for _, c := range []struct {
		name         string
		program      []string
		flags        []string
		duringReload bool
	}{
		{"plain", nil, nil, false},
		{"during reload", nil, nil, true},
		{"the program holds its socket after it stops accepting", []string{lingering}, []string{"--ready", "accept"}, false},
	} {
		duringReload := c.duringReload
		t.Run(c.name, func(t *testing.T) {
			d := startDaemon(t, c.program, c.flags...)
			ctx, cancel := context.WithCancel(context.Background())
			load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200, Slow: 1500 * time.Millisecond, SlowEvery: 100 * time.Millisecond})
			if err := load.WaitAnswers(0, 60, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if duringReload {
				proc.WriteExec(t, d.prog, []byte("#!/bin/sh\nsleep 5\nexec "+appBin+"\n"))
				go d.reload()
				d.waitRecord(5*time.Second, "event=generation.started", "gen=2")
			}
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			d.waitRecord(5*time.Second, "event=generation.draining", "gen=1")
			// Load on through the drain, which the slow requests make last.
			time.Sleep(1200 * time.Millisecond)
			cancel()
			r := load.Wait()
			t.Logf("%v", r)
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("handoff did not exit:\n%s", d.log())
			}
			// (A reset during the handshake, as the last generation closes
			// the socket, is a refusal: the request was never sent.)
			if n := r.Failed["ECONNRESET"] + r.Failed["EOF"]; n > 0 {
				t.Errorf("%d requests reset or cut after they were sent (%v): their connections were accepted by the kernel and nobody served them", n, r.Failed)
			}
			if r.Failed["ECONNREFUSED"] == 0 {
				t.Errorf("no request was refused after the stop: %v", r.Failed)
			}
		})
	}
}

// TestStopThatKillsExitsNonZero: a stop whose generation is still draining
// at --drain-timeout is killed, and handoff exits with ExitStopCut, so that
// an orchestrator can tell it from a clean stop (exit 0); the same for a
// second stop signal.
func TestStopThatKillsExitsNonZero(t *testing.T) {
	alongside(t)
	for _, second := range []bool{false, true} {
		t.Run(map[bool]string{false: "drain timeout", true: "second signal"}[second], func(t *testing.T) {
			d := startDaemon(t, nil, "--drain-timeout", "1s")
			slow := d.postSlow(30 * time.Second)
			// The slow request reaches the program: it holds a connection.
			for deadline := time.Now().Add(5 * time.Second); openConns(d.serving()) == 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the program holds no connection 5 s after the slow request")
				}
			}
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			if second {
				d.waitRecord(5*time.Second, "event=generation.draining")
				_ = d.cmd.Process.Signal(syscall.SIGTERM)
			}
			err := d.waitExit(20 * time.Second)
			if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != daemon.ExitStopCut {
				t.Errorf("handoff exited with %v, want status %d", err, daemon.ExitStopCut)
			}
			if err := <-slow; err == nil {
				t.Error("the slow request was answered, yet the stop says it killed")
			}
			if rec := d.waitRecord(time.Second, "event=handoff.exit"); rec.Get("status") != "3" {
				t.Errorf("exit record: %s", rec)
			}
		})
	}
}

// TestStopUnixSocket stops handoff under load on a Unix stream socket, with
// a program that holds its socket a while after it stops accepting: a
// socket filter cannot drop a Unix connect, so the socket's file is removed
// first — a connect after that fails (ENOENT: refused, nothing sent) — and
// the generation takes what was queued. None is accepted by the kernel and
// then reset (200 of 2,390 were, measured before).
func TestStopUnixSocket(t *testing.T) {
	alongside(t)
	lingering := lingeringServer(t, "0.5")
	path := filepath.Join(t.TempDir(), "web.sock")
	d := startDaemonOn(t, "", "unix://"+path, []string{lingering}, "--ready", "accept")
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "unix", path)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://handoff", Rate: 400, Dial: dial, Timeout: 5 * time.Second})
	if err := load.WaitAnswers(0, 200, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.waitExit(30 * time.Second); err != nil {
		t.Fatalf("handoff exited with %v:\n%s", err, d.log())
	}
	cancel()
	r := load.Wait()
	t.Logf("%v", r)
	if n := r.Failed["ECONNRESET"] + r.Failed["EOF"] + r.Failed["timeout"]; n > 0 {
		t.Errorf("%d requests reset, cut or left waiting after they were sent (%v): their connections were queued and nobody served them", n, r.Failed)
	}
	if r.Failed["ENOENT"] == 0 {
		t.Errorf("no connect failed for want of the socket's file after the stop: %v", r.Failed)
	}
	if rec := d.waitRecord(time.Second, "event=stop.held_back"); rec == nil {
		t.Error("no stop.held_back record")
	}
}

// lingeringServer returns a program that runs testdata/plain_server.py,
// which holds its socket for linger seconds after it stops accepting, or
// skips t where python3 is missing.
func lingeringServer(t *testing.T, linger string) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	script, err := filepath.Abs("testdata/plain_server.py")
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(t.TempDir(), "lingering")
	proc.WriteExec(t, prog, []byte("#!/bin/sh\nLINGER="+linger+" exec "+py+" "+script+"\n"))
	return prog
}
