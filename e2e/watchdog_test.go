package e2e_test

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/internal/systemdtest"
)

// TestWatchdog: with WatchdogSec=, pings come from whichever generation is
// the main process — the unit survives reloads — and a generation that hangs
// is caught: systemd kills it and starts a new one.
func TestWatchdog(t *testing.T) {
	t.Parallel() // it waits more than it computes (see main_test.go)
	m := systemdtest.Start(t)
	addr := proc.FreeAddr(t)
	text := unit(t, m, "httpserver.service", "/usr/local/bin/httpserver", bin("httpserver"), "0.0.0.0:8080", addr)
	text = strings.Replace(text, "Restart=on-failure", "Restart=on-failure\nRestartSec=100ms\nWatchdogSec=1\nWatchdogSignal=SIGKILL", 1)
	m.Install("httpserver.service", text)
	if out, err := m.Systemctl("start", "httpserver.service"); err != nil {
		t.Fatalf("start: %v %s", err, out)
	}
	waitActive(t, m, "httpserver.service")
	pid := mainPID(m, "httpserver.service")
	for i := 0; i < 3; i++ {
		if out, err := m.Systemctl("reload", "httpserver.service"); err != nil {
			t.Fatalf("reload: %v %s", err, out)
		}
		waitNewMain(t, m, "httpserver.service", pid)
		pid = mainPID(m, "httpserver.service")
	}
	// Longer than WatchdogSec: a generation that did not ping since a
	// reload would have been killed (and restarted) by now.
	time.Sleep(1500 * time.Millisecond)
	if n := m.Show("httpserver.service", "NRestarts"); n != "0" {
		t.Fatalf("the watchdog fired across reloads: NRestarts=%s\n%s", n, m.Journal("httpserver.service"))
	}
	// Hang the serving generation.
	host := m.HostPID(pid)
	if host == 0 {
		t.Fatalf("cannot find generation %d on the host", pid)
	}
	start := time.Now()
	_ = syscall.Kill(host, syscall.SIGSTOP)
	waitNewMain(t, m, "httpserver.service", pid)
	t.Logf("hung generation replaced after %v", time.Since(start))
	if n := m.Show("httpserver.service", "NRestarts"); n != "1" {
		t.Errorf("NRestarts=%s, want 1", n)
	}
	if got := answeredBy(t, addr); got != mainPID(m, "httpserver.service") {
		t.Errorf("answered by %d, want the new main process", got)
	}
}

// TestDaemonWatchdog: handoff run under WatchdogSec=; the program pings
// handoff's per-generation NOTIFY_SOCKET (WATCHDOG_USEC, WATCHDOG_PID), and
// handoff pings systemd. A generation that hangs is killed and restarted by
// handoff, whose pid — the unit's MainPID — stays.
func TestDaemonWatchdog(t *testing.T) {
	t.Parallel() // it waits more than it computes (see main_test.go)
	m := systemdtest.Start(t)
	addr := proc.FreeAddr(t)
	text := unit(t, m, "app-notify.service", "/usr/local/bin/handoff", bin("handoff"), "/usr/local/bin/app", bin("app"), "0.0.0.0:80", addr)
	text = strings.Replace(text, "Restart=on-failure", "Restart=on-failure\nWatchdogSec=1", 1)
	m.Install("app-notify.service", text)
	if out, err := m.Systemctl("start", "app-notify.service"); err != nil {
		t.Fatalf("start: %v %s", err, out)
	}
	waitActive(t, m, "app-notify.service")
	handoffPid := mainPID(m, "app-notify.service")
	for i := 0; i < 3; i++ {
		if out, err := m.Systemctl("reload", "app-notify.service"); err != nil {
			t.Fatalf("reload: %v %s", err, out)
		}
	}
	// Longer than WatchdogSec: without pings since a reload, systemd
	// would have killed handoff by now.
	time.Sleep(1500 * time.Millisecond)
	if n := m.Show("app-notify.service", "NRestarts"); n != "0" {
		t.Fatalf("the watchdog fired across reloads: NRestarts=%s\n%s", n, m.Journal("app-notify.service"))
	}
	hung := answeredBy(t, addr)
	host := m.HostPID(hung)
	if host == 0 {
		t.Fatalf("cannot find generation %d on the host", hung)
	}
	start := time.Now()
	_ = syscall.Kill(host, syscall.SIGSTOP)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("the hung generation was not replaced:\n%s", m.Journal("app-notify.service"))
		}
		c := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, err := c.Post("http://"+addr+"/", "text/plain", nil); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("hung generation replaced after %v", time.Since(start))
	if p := mainPID(m, "app-notify.service"); p != handoffPid {
		t.Errorf("MainPID changed from %d to %d", handoffPid, p)
	}
	if n := m.Show("app-notify.service", "NRestarts"); n != "0" {
		t.Errorf("systemd restarted the unit (NRestarts=%s); handoff should have replaced the generation", n)
	}
}
