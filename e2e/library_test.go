package e2e_test

import (
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/internal/systemdtest"
)

// TestLibraryNotifyReload: examples/systemd/httpserver.service; ten
// `systemctl reload`s under load, each returning only once the new
// generation is the unit's main process; then a broken binary, whose reload
// returns in time while the old generation serves on; then `systemctl stop`
// with a 2 s request in flight.
func TestLibraryNotifyReload(t *testing.T) {
	m := systemdtest.Start(t)
	t.Logf("systemd %d", m.Version)
	addr := proc.FreeAddr(t)
	dir := execDir(t)
	proc.CopyExec(t, bin("httpserver"), dir+"/httpserver")
	m.Install("httpserver.service", unit(t, m, "httpserver.service",
		"/usr/local/bin/httpserver", dir+"/httpserver", "0.0.0.0:8080", addr))
	if out, err := m.Systemctl("start", "httpserver.service"); err != nil {
		t.Fatalf("start: %v %s\n%s", err, out, m.Journal("httpserver.service"))
	}
	waitActive(t, m, "httpserver.service")
	// Eight 1 s requests in flight at each handover: an upgrade waits until
	// its predecessor has drained them.
	l := loadEvery("http://"+addr, 200, time.Second, 125*time.Millisecond)

	var took []time.Duration
	pid := mainPID(m, "httpserver.service")
	for i := 0; i < 10; i++ {
		start := time.Now()
		if out, err := m.Systemctl("reload", "httpserver.service"); err != nil {
			t.Fatalf("reload %d: %v %s\n%s", i+1, err, out, m.Journal("httpserver.service"))
		}
		took = append(took, time.Since(start))
		next := mainPID(m, "httpserver.service")
		if m.Version >= 253 {
			// notify-reload: reload returned, so the new generation is the
			// main process already.
			if next == pid || next == 0 {
				t.Fatalf("reload %d returned with MainPID still %d", i+1, next)
			}
		} else {
			// kill -HUP returns at once: wait for MAINPID= to arrive.
			deadline := time.Now().Add(10 * time.Second)
			for (next == pid || next == 0) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				next = mainPID(m, "httpserver.service")
			}
		}
		if st := m.Show("httpserver.service", "ActiveState"); st != "active" {
			t.Fatalf("reload %d: unit %s", i+1, st)
		}
		pid = next
		l.more(t, pid, 30) // the new generation serves
	}
	t.Logf("systemctl reload took %v", took)

	// A broken binary: the reload ends, the old generation serves on.
	// (A release that fails after upgrader.New: its stderr is quoted.)
	proc.CopyExec(t, dir+"/httpserver", dir+"/good")
	proc.WriteExec(t, dir+"/httpserver", []byte("#!/bin/sh\nexec "+dir+"/good \"$@\" -addr tcp://no-port\n"))
	start := time.Now()
	out, _ := m.Systemctl("reload", "httpserver.service")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("reload of a broken binary took %v", d)
	}
	l.more(t, pid, 30) // the old generation serves on
	if p := mainPID(m, "httpserver.service"); p != pid {
		t.Errorf("MainPID %d after a failed reload, want %d (%s)", p, pid, out)
	}
	if st := m.Show("httpserver.service", "ActiveState"); st != "active" {
		t.Errorf("unit %s after a failed reload", st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.Show("httpserver.service", "StatusText"), "upgrade failed") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := m.Show("httpserver.service", "StatusText"); !strings.Contains(s, "upgrade failed") || !strings.Contains(s, "no-port: malformed address") {
		t.Errorf("status text %q does not say the upgrade failed and why:\n%s", s, m.Journal("httpserver.service"))
	}
	checkLoad(t, l.stop(), m, "httpserver.service")

	// systemctl stop drains a request in flight.
	slow, written := make(chan error, 1), make(chan struct{})
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/slow?d=2s", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { close(written) },
		}))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = http.ErrAbortHandler
			}
		}
		slow <- err
	}()
	// Sent, and accepted: a request on a connection opened after it is
	// answered, and connections are accepted in the order they came.
	<-written
	answeredBy(t, addr)
	if out, err := m.Systemctl("stop", "httpserver.service"); err != nil {
		t.Errorf("stop: %v %s", err, out)
	}
	if err := <-slow; err != nil {
		t.Errorf("request in flight during stop: %v\n%s", err, m.Journal("httpserver.service"))
	}
	if st, res := m.Show("httpserver.service", "ActiveState"), m.Show("httpserver.service", "Result"); st != "inactive" || res != "success" {
		t.Errorf("after stop: %s, result %s", st, res)
	}
}

// TestLibrarySocketUnit: httpserver.socket passes two sockets named web and
// admin; the server takes them by name and keeps them across reloads.
func TestLibrarySocketUnit(t *testing.T) {
	m := systemdtest.Start(t)
	addr := proc.FreeAddr(t)
	m.Install("httpserver.socket", unit(t, m, "httpserver.socket", "127.0.0.1:8080", addr))
	m.Install("httpserver-admin.socket", unit(t, m, "httpserver-admin.socket"))
	m.Install("httpserver-socket.service", unit(t, m, "httpserver-socket.service", "/usr/local/bin/httpserver", bin("httpserver")))
	if out, err := m.Systemctl("start", "httpserver.socket", "httpserver-admin.socket"); err != nil {
		t.Fatalf("start socket: %v %s", err, out)
	}
	// The first connection starts the service.
	l := load("http://"+addr, 100, 0)
	waitActive(t, m, "httpserver-socket.service")
	pid := mainPID(m, "httpserver-socket.service")
	for i := 0; i < 3; i++ {
		if out, err := m.Systemctl("reload", "httpserver-socket.service"); err != nil {
			t.Fatalf("reload: %v %s", err, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for mainPID(m, "httpserver-socket.service") == pid && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		pid = mainPID(m, "httpserver-socket.service")
		l.more(t, pid, 30)
	}
	checkLoad(t, l.stop(), m, "httpserver-socket.service")
	// The admin socket, by name, from the newest generation.
	out, err := m.Exec("curl", "-s", "-X", "POST", "--max-time", "5", "--unix-socket", "/run/httpserver-admin.sock", "http://admin/")
	if err != nil || out != "pid="+strconv.Itoa(pid) {
		t.Errorf("admin socket: %v %q, want pid=%d", err, out, pid)
	}
	if got := answeredBy(t, addr); got != pid {
		t.Errorf("web socket answered by %d, want %d", got, pid)
	}
}

// TestLibraryReleaseSymlink: examples/systemd/httpserver.service run from a
// `current` symlink, with the unit's WorkingDirectory= and Environment=PWD=
// lines; before each of two `systemctl reload`s under load, current is
// flipped to the next release and the previous release is removed. Each
// generation must run its own release's binary, in its directory.
func TestLibraryReleaseSymlink(t *testing.T) {
	m := systemdtest.Start(t)
	addr := proc.FreeAddr(t)
	dir, err := filepath.EvalSymlinks(execDir(t))
	if err != nil {
		t.Fatal(err)
	}
	release := func(v string) string { return filepath.Join(dir, "releases", v) }
	for _, v := range []string{"v1", "v2", "v3"} {
		if err := os.MkdirAll(release(v), 0o755); err != nil {
			t.Fatal(err)
		}
		proc.CopyExec(t, bin("httpserver"), filepath.Join(release(v), "httpserver"))
	}
	current := filepath.Join(dir, "current")
	flip := func(v string) { proc.Flip(t, current, filepath.Join("releases", v)) }
	flip("v1")
	const u = "httpserver.service"
	m.Install(u, unit(t, m, u,
		"/usr/local/bin/httpserver", current+"/httpserver", "0.0.0.0:8080", addr,
		"#WorkingDirectory=/srv/app/current", "WorkingDirectory="+current,
		"#Environment=PWD=/srv/app/current", "Environment=PWD="+current))
	if out, err := m.Systemctl("start", u); err != nil {
		t.Fatalf("start: %v %s\n%s", err, out, m.Journal(u))
	}
	waitActive(t, m, u)
	l := load("http://"+addr, 100, 0)
	pid := mainPID(m, u)
	for i, v := range []string{"v2", "v3"} {
		flip(v)
		if err := os.RemoveAll(release([]string{"v1", "v2"}[i])); err != nil {
			t.Fatal(err)
		}
		if out, err := m.Systemctl("reload", u); err != nil {
			t.Fatalf("reload to %s: %v %s\n%s", v, err, out, m.Journal(u))
		}
		waitNewMain(t, m, u, pid)
		pid = mainPID(m, u)
		host := m.HostPID(pid)
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", host))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", host))
		if cwd != release(v) || exe != filepath.Join(release(v), "httpserver") {
			t.Errorf("after the reload to %s the main process runs %s in %s, want %s in %s\n%s",
				v, exe, cwd, filepath.Join(release(v), "httpserver"), release(v), m.Output(u))
		}
		l.more(t, pid, 30)
	}
	checkLoad(t, l.stop(), m, u)
	if strings.Contains(m.Output(u), "not its own") {
		t.Errorf("the upgrade warned about the directory:\n%s", m.Output(u))
	}
}
