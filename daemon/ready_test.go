//go:build linux

package daemon_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestReadyProbeOnHeldSocket: an http or tcp probe of a socket handoff holds
// — by its own address, a wildcard, a name, or a socket systemd passed — is
// refused at start: the serving generation would answer it for a new one.
func TestReadyProbeOnHeldSocket(t *testing.T) {
	spawns(t)
	addr := proc.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	for _, probe := range []string{
		"http://" + addr + "/", "tcp://" + addr, "http://localhost:" + port + "/healthz",
		"tcp://:" + port, "http://0.0.0.0:" + port + "/", "tcp://[::]:" + port,
	} {
		for _, listen := range []string{addr, ":" + port} {
			out, code := runHandoff(t, nil, "run", "--control", filepath.Join(t.TempDir(), "c"), "--listen", listen, "--ready", probe, "--", "/bin/true")
			if code != 2 || !strings.Contains(lastLine(out), "handoff holds") || !strings.Contains(lastLine(out), "--ready accept") {
				t.Errorf("--listen %s --ready %s: exit %d, %q; want exit 2 and the reason", listen, probe, code, out)
			}
		}
	}
	// A socket passed by systemd, taken without --listen.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ln.(*net.TCPListener).File()
	ln.Close()
	defer f.Close()
	out, code := runHandoff(t, []*os.File{f}, "/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec "$@"`, "sh",
		handoffBin, "run", "--control", filepath.Join(t.TempDir(), "c"), "--ready", "http://localhost:"+port+"/", "--", "/bin/true")
	if code != 2 || !strings.Contains(lastLine(out), `socket "web"`) {
		t.Errorf("socket from systemd: exit %d, %q; want exit 2 naming the socket", code, out)
	}
	// Another port is fine: handoff starts (and the program, /bin/true,
	// exits before it is ready).
	out, code = runHandoff(t, nil, "run", "--control", filepath.Join(t.TempDir(), "c"), "--listen", proc.FreeAddr(t), "--ready", "tcp://127.0.0.1:1", "--", "/bin/true")
	if code != 1 || !strings.Contains(out, "exited before it was ready") {
		t.Errorf("a probe of another port: exit %d, %q", code, out)
	}
}

// runHandoff runs handoff with args (or, if args[0] is a path, that
// command) and returns its output and exit status.
func runHandoff(t *testing.T, files []*os.File, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(handoffBin, args...)
	if strings.HasPrefix(args[0], "/") {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "LISTEN_FDS=", "LISTEN_PID=")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		case <-done:
		}
	}()
	out, err := cmd.CombinedOutput()
	close(done)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// lastLine returns the last line of out: the error, for a command that
// logged before it failed.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// TestReadyAccept runs a Python server that never sends READY=1 with
// --ready accept: a broken release fails the reload while the old
// generation serves on, losing nothing; a release slow to start is ready
// only once it waits on the socket.
func TestReadyAccept(t *testing.T) {
	alongside(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	script, err := filepath.Abs("testdata/plain_server.py")
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(t.TempDir(), "app")
	release := func(delay string) {
		proc.WriteExec(t, prog, []byte("#!/bin/sh\nDELAY="+delay+" exec "+py+" "+script+"\n"))
	}
	release("0")
	d := startDaemon(t, []string{prog}, "--ready", "accept", "--ready-timeout", "10s")
	first := d.serving()

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 100})
	if err := load.WaitAnswers(0, 10, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// The broken release of the reproduction: it sleeps 1.5 s and exits 3.
	proc.WriteExec(t, prog, []byte("#!/bin/sh\nexec "+py+" -c 'import sys, time; time.sleep(1.5); sys.exit(3)'\n"))
	start := time.Now()
	out, code := d.reload()
	if took := time.Since(start); code != 1 || !strings.Contains(out, "exited before it was ready (exit status 3)") || took < 1400*time.Millisecond {
		t.Errorf("broken release: reload exit %d after %v: %s; want 1 with the exit status, after 1.5 s", code, took, out)
	}
	if p := d.serving(); p != first {
		t.Errorf("after the broken release, generation pid %d serves, want the old %d", p, first)
	}

	// A good release that takes 1 s to start serving.
	release("1")
	start = time.Now()
	out, code = d.reload()
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("slow release: reload exit %d: %s\n%s", code, out, d.log())
	}
	m := regexp.MustCompile(`ready in (\d+) ms`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("slow release: no ready time in %q", out)
	}
	if ms, _ := strconv.Atoi(m[1]); ms < 1000 || took < time.Second {
		t.Errorf("slow release: %q after %v; want ready only after its 1 s start", out, took)
	}
	d.waitAlone(15 * time.Second) // the load runs on through the drain
	cancel()
	res := load.Wait()
	t.Logf("load: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if len(res.Pids) != 2 {
		t.Errorf("%d generations answered, want 2 (the first and the slow release)", len(res.Pids))
	}
	d.stop()
}

// TestReadyAcceptNeverServes: a program that never waits on its socket is
// not ready, and the reason names the socket.
func TestReadyAcceptNeverServes(t *testing.T) {
	spawns(t)
	prog := filepath.Join(t.TempDir(), "idle")
	proc.WriteExec(t, prog, []byte("#!/bin/sh\nexec sleep 30\n"))
	out, code := runHandoff(t, nil, "run", "--control", filepath.Join(t.TempDir(), "c"), "--listen", "web="+proc.FreeAddr(t),
		"--ready", "accept", "--ready-timeout", "500ms", "--", prog)
	if code != 1 || !strings.Contains(out, "no process of it waits for connections on web") {
		t.Errorf("exit %d, %q", code, out)
	}
}
