package upgrader

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestOnReady: hooks run once, in order, at the first Ready; a hook
// registered after Ready never runs; a hook's error fails Ready, and the
// hooks after it do not run.
func TestOnReady(t *testing.T) {
	newU := func() *Upgrader {
		pidFile := filepath.Join(t.TempDir(), "app.pid")
		u, err := newWithCore(Options{NoSignals: true, PIDFile: pidFile, Logger: slog.New(slog.DiscardHandler)}, newNoHandoff(pidFile), watchSignals(true))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.Stop)
		return u
	}
	u := newU()
	var ran []int
	u.OnReady(func() error { ran = append(ran, 1); return nil })
	u.OnReady(func() error { ran = append(ran, 2); return nil })
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	u.OnReady(func() error { ran = append(ran, 3); return nil })
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 2 || ran[0] != 1 || ran[1] != 2 {
		t.Fatalf("hooks ran %v, want [1 2]", ran)
	}

	u = newU()
	boom := errors.New("boom")
	ran = nil
	u.OnReady(func() error { ran = append(ran, 1); return boom })
	u.OnReady(func() error { ran = append(ran, 2); return nil })
	if err := u.Ready(); !errors.Is(err, boom) {
		t.Fatalf("Ready returned %v, want the hook's error", err)
	}
	if len(ran) != 1 {
		t.Fatalf("hooks ran %v after the first failed, want [1]", ran)
	}
}

// TestFilesWithoutHandoff: where no generation can be started, nothing is
// inherited and PassFile does nothing, without an error. (Passing between
// real generations is tested by package quic, whose maps travel this way.)
func TestFilesWithoutHandoff(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "app.pid")
	u, err := newWithCore(Options{NoSignals: true, PIDFile: pidFile, Logger: slog.New(slog.DiscardHandler)}, newNoHandoff(pidFile), watchSignals(true))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Stop()
	if f, err := u.InheritedFile("x"); f != nil || err != nil {
		t.Fatalf("InheritedFile: %v, %v; want nil, nil", f, err)
	}
	if err := u.PassFile("x", os.Stdin); err != nil {
		t.Fatal(err)
	}
}
