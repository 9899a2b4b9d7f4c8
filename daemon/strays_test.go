//go:build linux

package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// daemonizing is a program that does what nginx without 'daemon off;' or
// memcached -d do: it starts its real self in a session of its own, which
// keeps the sockets, and exits 0.
const daemonizing = "#!/bin/sh\nsetsid -f sleep 300 </dev/null >/dev/null 2>&1\nexit 0\n"

// TestDaemonizingProgram: a first generation that daemonizes makes handoff
// exit 1 with one line that says so and how to run it in the foreground; a
// release that daemonizes fails its reload the same way while the old
// generation serves on; and nothing it left behind outlives handoff.
func TestDaemonizingProgram(t *testing.T) {
	spawns(t)
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid (util-linux) is not installed")
	}
	t.Run("first generation", func(t *testing.T) {
		dir := t.TempDir()
		prog := filepath.Join(dir, "daemonizes")
		proc.WriteExec(t, prog, []byte(daemonizing))
		cmd := exec.Command(handoffBin, "run", "--log-format", "json", "--control", filepath.Join(dir, "c.sock"),
			"--listen", "web="+proc.FreeAddr(t), "--", prog)
		out, err := runBounded(t, cmd, 20*time.Second)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("handoff run: %v, want exit 1:\n%s", err, out)
		}
		if !strings.Contains(out, "daemonized: its process exited 0 and left pid") || !strings.Contains(out, "run the program in the foreground") {
			t.Errorf("the failure does not say that the program daemonized:\n%s", out)
		}
		if left := proc.Descendants(os.Getpid()); len(left) > 0 {
			t.Errorf("processes left behind after handoff exited: %v", left)
		}
	})
	t.Run("release", func(t *testing.T) {
		d := startDaemon(t, nil)
		first := d.serving()
		proc.WriteExec(t, d.prog, []byte(daemonizing))
		out, code := d.reload()
		if code != 1 || !strings.Contains(out, "daemonized") {
			t.Errorf("reload of a release that daemonizes: exit %d: %s", code, out)
		}
		d.waitRecord(5*time.Second, "event=generation.strays", "gen=2")
		if p := d.serving(); p != first {
			t.Errorf("serving pid %d, want %d", p, first)
		}
		// The copy it left is stopped (its SIGTERM kills sleep).
		deadline := time.Now().Add(5 * time.Second)
		for len(sleepers(d.cmd.Process.Pid)) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if s := sleepers(d.cmd.Process.Pid); len(s) > 0 {
			t.Errorf("the daemonized copy is still running: %v", s)
		}
		d.stop()
	})
	t.Run("left at stop", func(t *testing.T) {
		// A program that leaves a helper of its own session running, and
		// serves on: the helper is stopped when handoff stops.
		dir := t.TempDir()
		prog := filepath.Join(dir, "helper")
		proc.WriteExec(t, prog, []byte("#!/bin/sh\nsetsid -f sleep 300 </dev/null >/dev/null 2>&1\nexec "+appBin+"\n"))
		d := startDaemon(t, []string{prog})
		d.stop()
		if left := proc.Descendants(os.Getpid()); len(left) > 0 {
			t.Errorf("processes left behind after handoff exited: %v", left)
		}
		d.waitRecord(time.Second, "event=generation.strays", "gen=1", "left~sleep 300")
	})
	t.Run("ignores the stop signal", func(t *testing.T) {
		// What it leaves ignores SIGTERM (and its children with it): killed
		// after the drain timeout, before handoff exits.
		dir := t.TempDir()
		prog := filepath.Join(dir, "stubborn")
		proc.WriteExec(t, prog, []byte("#!/bin/sh\nsetsid -f sh -c 'trap \"\" TERM; while :; do sleep 1; done' </dev/null >/dev/null 2>&1\nexec "+appBin+"\n"))
		d := startDaemon(t, []string{prog}, "--drain-timeout", "1s")
		d.stop()
		if left := proc.Descendants(os.Getpid()); len(left) > 0 {
			t.Errorf("processes left behind after handoff exited: %v", left)
		}
		recs := d.records()
		if logrec.Find(recs, "event=strays.killing") == nil && logrec.Find(recs, "event=strays.kill") == nil {
			t.Errorf("no record of the kill:\n%s", d.log())
		}
	})
}

// sleepers returns handoff's children running sleep.
func sleepers(handoff int) []int {
	var out []int
	for _, p := range proc.Descendants(handoff) {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline"); strings.HasPrefix(string(b), "sleep\x00") {
			out = append(out, p)
		}
	}
	return out
}

// runBounded runs cmd and returns its combined output, killing it after
// timeout.
func runBounded(t *testing.T, cmd *exec.Cmd, timeout time.Duration) (string, error) {
	t.Helper()
	var b strings.Builder
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return b.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit within %v:\n%s", cmd.Args, timeout, b.String())
		return "", nil
	}
}
