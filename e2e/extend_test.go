package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/internal/systemdtest"
)

// TestReloadLongerThanStartTimeout: a reload that waits — here a 4 s bake —
// longer than the unit's TimeoutStartSec=2s is not failed by systemd:
// handoff sends EXTEND_TIMEOUT_USEC= while it waits, and `systemctl reload`
// returns once the new generation serves.
func TestReloadLongerThanStartTimeout(t *testing.T) {
	t.Parallel() // it waits more than it computes (see main_test.go)
	m := systemdtest.Start(t)
	if m.Version < 253 {
		t.Skipf("systemd %d has no Type=notify-reload", m.Version)
	}
	const name = "app.service"
	addr := proc.FreeAddr(t)
	text := unit(t, m, name, "/usr/local/bin/handoff", bin("handoff"), "/usr/local/bin/app", bin("app"),
		"0.0.0.0:80", addr, "? --user www-data", "", "--drain-timeout 30s", "--drain-timeout 30s --bake 4s")
	text = strings.Replace(text, "[Service]", "[Service]\nTimeoutStartSec=2s", 1)
	m.Install(name, text)
	if out, err := m.Systemctl("start", name); err != nil {
		t.Fatalf("start: %v %s\n%s", err, out, m.Journal(name))
	}
	waitActive(t, m, name)
	first := answeredBy(t, addr)
	start := time.Now()
	out, err := m.Systemctl("reload", name)
	took := time.Since(start)
	t.Logf("systemctl reload took %v: %v %s", took.Round(time.Millisecond), err, out)
	if err != nil {
		t.Fatalf("reload with a 4 s bake under TimeoutStartSec=2s: %v %s\n%s", err, out, m.Journal(name))
	}
	if took < 4*time.Second {
		t.Errorf("systemctl reload returned after %v, before the 4 s bake ended", took)
	}
	// The old generation stops accepting as it gets its stop signal.
	for deadline := time.Now().Add(5 * time.Second); answeredBy(t, addr) == first; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("still answered by the first generation %d", first)
			break
		}
	}
	if st := m.Show(name, "ActiveState"); st != "active" {
		t.Errorf("after the reload the unit is %s:\n%s", st, m.Journal(name))
	}
	_, _ = m.Systemctl("stop", name)
}

// TestLibraryReloadLongerThanStartTimeout is the same in library mode: a new
// release that takes 4 s to start, under TimeoutStartSec=2s; the serving
// generation sends EXTEND_TIMEOUT_USEC= while it waits for it.
func TestLibraryReloadLongerThanStartTimeout(t *testing.T) {
	t.Parallel() // it waits more than it computes (see main_test.go)
	m := systemdtest.Start(t)
	if m.Version < 253 {
		t.Skipf("systemd %d has no Type=notify-reload", m.Version)
	}
	const name = "httpserver.service"
	addr := proc.FreeAddr(t)
	dir := execDir(t)
	proc.CopyExec(t, bin("httpserver"), dir+"/good")
	proc.CopyExec(t, bin("httpserver"), dir+"/httpserver")
	text := unit(t, m, name, "/usr/local/bin/httpserver", dir+"/httpserver", "0.0.0.0:8080", addr)
	text = strings.Replace(text, "[Service]", "[Service]\nTimeoutStartSec=2s", 1)
	m.Install(name, text)
	if out, err := m.Systemctl("start", name); err != nil {
		t.Fatalf("start: %v %s\n%s", err, out, m.Journal(name))
	}
	waitActive(t, m, name)
	first := answeredBy(t, addr)
	proc.WriteExec(t, dir+"/httpserver", []byte("#!/bin/sh\nsleep 4\nexec "+dir+"/good \"$@\"\n"))
	start := time.Now()
	out, err := m.Systemctl("reload", name)
	took := time.Since(start)
	t.Logf("systemctl reload took %v: %v %s", took.Round(time.Millisecond), err, out)
	if err != nil {
		t.Fatalf("reload of a release that starts in 4 s under TimeoutStartSec=2s: %v %s\n%s", err, out, m.Journal(name))
	}
	if took < 4*time.Second {
		t.Errorf("systemctl reload returned after %v, before the release could be ready", took)
	}
	if last := answeredBy(t, addr); last == first {
		t.Errorf("still answered by the first generation %d", first)
	}
	if st := m.Show(name, "ActiveState"); st != "active" {
		t.Errorf("after the reload the unit is %s:\n%s", st, m.Journal(name))
	}
	_, _ = m.Systemctl("stop", name)
}
