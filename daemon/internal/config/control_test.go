//go:build linux

package config

import (
	"path/filepath"
	"testing"
)

// TestControlRelative: a relative --control is taken from the directory
// handoff starts in, as the client commands take theirs.
func TestControlRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cfg, err := Parse([]string{"--control", "./c.sock", "--", "/bin/true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "c.sock"); cfg.Control != want {
		t.Errorf("Control %q, want %q", cfg.Control, want)
	}
}
