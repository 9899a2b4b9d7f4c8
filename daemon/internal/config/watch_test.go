//go:build linux

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWatchFlag: --watch takes files and directories, and a missing path
// in a directory that exists; it refuses one whose directory is missing,
// an empty one and one given twice, each in one line, as ErrUsage.
func TestWatchFlag(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]string{"--watch", f, "--watch", dir, "--watch", filepath.Join(dir, "later.conf"), "--", "/bin/true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{f, dir, filepath.Join(dir, "later.conf")}; strings.Join(cfg.Watch, " ") != strings.Join(want, " ") {
		t.Errorf("Watch %q, want %q", cfg.Watch, want)
	}
	t.Chdir(dir)
	if cfg, err := Parse([]string{"--watch", "app.conf", "--", "/bin/true"}, nil); err != nil || len(cfg.Watch) != 1 || cfg.Watch[0] != f {
		t.Errorf("a relative --watch: %v, %v; want %s", cfg, err, f)
	}
	for _, args := range [][]string{
		{"--watch", filepath.Join(dir, "no", "such.conf")},
		{"--watch", ""},
		{"--watch", f, "--watch", f},
	} {
		_, err := Parse(append(args, "--", "/bin/true"), nil)
		if !errors.Is(err, ErrUsage) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want a usage error of one line", args, err)
		}
	}
}
