//go:build linux

package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/proc"
)

// TestEnvironmentWithheld: a generation gets handoff's environment and its
// env file, less only the variables handoff sets for it itself or reads
// itself: a user's own HANDOFF_... or LISTEN_... variables pass through;
// stale socket-activation variables in handoff's environment or the env
// file are replaced by handoff's.
func TestEnvironmentWithheld(t *testing.T) {
	spawns(t)
	t.Setenv("HANDOFF_NODE_HELPER", "mine")
	t.Setenv("LISTEN_ADDR", "also-mine")
	t.Setenv("WATCHDOG_NAME", "mine-too")
	t.Setenv("LISTEN_FDS", "99")
	t.Setenv("HANDOFF_HANDOVER_FDS", "7,8") // an outer handoff's, say: not this one's (no --handover)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	if err := os.WriteFile(envFile, []byte("HANDOFF_WORKER=7\nFROM_FILE=yes\nHANDOFF_COLOR=blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(dir, "env")
	prog := filepath.Join(dir, "prog")
	proc.WriteExec(t, prog, []byte("#!/bin/sh\nenv > "+dump+".tmp && mv "+dump+".tmp "+dump+"\nexec "+appBin+"\n"))
	d := startDaemon(t, []string{prog}, "--env-file", envFile)
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"HANDOFF_NODE_HELPER": "mine", "LISTEN_ADDR": "also-mine", "WATCHDOG_NAME": "mine-too", "FROM_FILE": "yes", "HANDOFF_COLOR": "blue",
		"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web", "HANDOFF_WORKER": "0", "HANDOFF_WORKERS": "1",
	} {
		if got[k] != want {
			t.Errorf("%s=%q in the generation's environment, want %q", k, got[k], want)
		}
	}
	if v, ok := got["HANDOFF_HANDOVER_FDS"]; ok {
		t.Errorf("HANDOFF_HANDOVER_FDS=%q reached the generation of a handoff without --handover", v)
	}
	d.stop()
}
