//go:build linux

package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestLaunchPassesPid checks that a program finds its own pid in LISTEN_PID
// and WATCHDOG_PID, both ways handoff puts it there: written into the new
// process's environment at its exec stop (traced), and through handoff's
// shim, which a setuid program gets (tracing would cancel its privileges).
func TestLaunchPassesPid(t *testing.T) {
	spawns(t)
	t.Setenv("WATCHDOG_USEC", "30000000")
	for _, c := range []struct {
		mode    string
		setuid  bool
		reloads int
	}{{"traced", false, 2}, {"shim", true, 1}} {
		t.Run(c.mode, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "seen")
			prog := filepath.Join(dir, "prog")
			proc.WriteExec(t, prog, []byte("#!/bin/sh\necho \"$$ $LISTEN_PID $WATCHDOG_PID $LISTEN_FDS\" >> "+out+"\nexec sleep 60\n"))
			if c.setuid {
				if err := os.Chmod(prog, os.ModeSetuid|0o755); err != nil {
					t.Fatal(err)
				}
			}
			d := startDaemon(t, []string{prog}, "--ready", "delay:50ms")
			for i := 0; i < c.reloads; i++ {
				if msg, code := d.reload(); code != 0 {
					t.Fatalf("reload: %d %s", code, msg)
				}
			}
			if n := logrec.Count(d.records(), "event=generation.started", "launch="+c.mode); n != c.reloads+1 {
				t.Errorf("%d generations started with launch=%s, want %d:\n%s", n, c.mode, c.reloads+1, d.log())
			}
			deadline := time.Now().Add(5 * time.Second)
			var lines []string
			for len(lines) < c.reloads+1 && time.Now().Before(deadline) {
				b, _ := os.ReadFile(out)
				lines = strings.Split(strings.TrimSpace(string(b)), "\n")
				if len(b) == 0 {
					lines = nil
				}
				time.Sleep(10 * time.Millisecond)
			}
			if len(lines) != c.reloads+1 {
				t.Fatalf("the program ran %d times, want %d: %q", len(lines), c.reloads+1, lines)
			}
			for _, l := range lines {
				f := strings.Fields(l)
				if len(f) != 4 || f[1] != f[0] || f[2] != f[0] || f[3] != "1" {
					t.Errorf("pid, LISTEN_PID, WATCHDOG_PID, LISTEN_FDS = %q; want the pid thrice and 1", l)
				}
			}
			d.stop()
		})
	}
}
