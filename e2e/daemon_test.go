package e2e_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/internal/systemdtest"
)

// TestDaemonReload: `handoff run` in examples/systemd/app.service
// (Type=notify-reload, systemd 253+) and app-notify.service (Type=notify with
// ExecReload=handoff reload, any systemd): ten `systemctl reload`s under
// load, each returning once the new generation serves, with MainPID — handoff
// itself — constant; and app.service with --workers 2, whose reloads roll
// both workers.
func TestDaemonReload(t *testing.T) {
	m := systemdtest.Start(t)
	type tc struct{ name, file, flags string }
	cases := []tc{{"app-notify.service", "app-notify.service", ""}}
	if m.Version >= 253 {
		cases = append(cases, tc{"app.service", "app.service", ""}, tc{"app.service --workers 2", "app.service", " --workers 2"})
	} else {
		t.Logf("systemd %d has no Type=notify-reload; testing app-notify.service only", m.Version)
	}
	for _, c := range cases {
		name := c.file
		t.Run(c.name, func(t *testing.T) {
			addr := proc.FreeAddr(t)
			m.Install(name, unit(t, m, name, "/usr/local/bin/handoff", bin("handoff"), "/usr/local/bin/app", bin("app"),
				"0.0.0.0:80", addr, "? --user www-data", "", "handoff run", "handoff run"+c.flags))
			if out, err := m.Systemctl("start", name); err != nil {
				t.Fatalf("start: %v %s\n%s", err, out, m.Journal(name))
			}
			waitActive(t, m, name)
			handoffPid := mainPID(m, name)
			l := load("http://"+addr, 200, time.Second)
			first := answeredBy(t, addr)
			workers := 1
			if c.flags != "" {
				workers = 2
			}
			var took []time.Duration
			for i := 0; i < 10; i++ {
				// Reload i ends generation i+1. Within --max-draining (3
				// processes): two generations drain at most with one
				// worker, one with two.
				if g := i + 1 - 2/workers; g >= 1 {
					waitExited(t, m, name, handoffPid, g, workers)
				}
				start := time.Now()
				if out, err := m.Systemctl("reload", name); err != nil {
					t.Fatalf("reload %d: %v %s\n%s", i+1, err, out, m.Journal(name))
				}
				took = append(took, time.Since(start))
				if p := mainPID(m, name); p != handoffPid {
					t.Fatalf("MainPID changed from %d to %d", handoffPid, p)
				}
			}
			t.Logf("systemctl reload took %v", took)
			if last := answeredBy(t, addr); last == first {
				t.Errorf("still answered by the first generation %d", first)
			}
			checkLoad(t, l.stop(), m, name)
			want := "serving generation 11"
			if c.flags != "" {
				want = "serving 2 of 2 workers (generation 11)"
			}
			if st := m.Show(name, "StatusText"); !strings.Contains(st, want) {
				t.Errorf("status text %q, want %q", st, want)
			}
			if out, err := m.Systemctl("stop", name); err != nil {
				t.Errorf("stop: %v %s", err, out)
			}
			if st, res := m.Show(name, "ActiveState"), m.Show(name, "Result"); st != "inactive" || res != "success" {
				t.Errorf("after stop: %s, result %s", st, res)
			}
		})
	}
}

// waitExited waits until handoff (pid, as the unit's MainPID) in unit u has
// logged the exit of each of the workers of generation gen. (The unit's
// output holds earlier runs' lines too.)
func waitExited(t *testing.T, m *systemdtest.Manager, u string, pid, gen, workers int) {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n = 0
		for _, line := range strings.Split(m.Output(u), "\n") {
			f := strings.Fields(line)
			if slices.Contains(f, "event=generation.exited") && slices.Contains(f, "gen="+strconv.Itoa(gen)) && slices.Contains(f, "handoff_pid="+strconv.Itoa(pid)) {
				n++
			}
		}
		if n >= workers {
			return
		}
	}
	t.Fatalf("%d of the %d workers of generation %d exited\n%s", n, workers, gen, m.Journal(u))
}

// TestFDStoreKeepsSocketsOpen: with FileDescriptorStoreMax= and
// Restart=always, the listening sockets — TCP and Unix — survive a SIGKILL
// of the main process and a `systemctl restart`: clients wait, none is
// refused, and the Unix socket's path still leads to it.
func TestFDStoreKeepsSocketsOpen(t *testing.T) {
	m := systemdtest.Start(t)
	const sock = "/run/fdstore-test.sock" // not under RuntimeDirectory=, which a restart removes
	for _, c := range fdStoreUnits(sock) {
		t.Run(c.unit, func(t *testing.T) {
			addr := startFDStoreUnit(t, m, c.unit, c.repl, "Restart=always\nRestartSec=100ms")

			l := load("http://"+addr, 100, 0)
			// The socket file as the host sees it, inside systemd's /run.
			hostSock := fmt.Sprintf("/proc/%d/root%s", m.PID, sock)
			lu := loadVia(hostSock, 50)
			l.more(t, 0, 20)
			lu.more(t, 0, 10)
			first := mainPID(m, c.unit)
			if out, err := m.Systemctl("kill", "--kill-whom=main", "--signal=KILL", c.unit); err != nil {
				t.Fatalf("kill: %v %s", err, out)
			}
			waitNewMain(t, m, c.unit, first)
			l.more(t, 0, 30)
			second := mainPID(m, c.unit)
			if out, err := m.Systemctl("restart", c.unit); err != nil {
				t.Fatalf("restart: %v %s", err, out)
			}
			waitNewMain(t, m, c.unit, second)
			l.more(t, 0, 30)
			lu.more(t, 0, 15)
			res := l.stop()
			t.Logf("load: %v", res)
			if n := res.Failed["ECONNREFUSED"]; n != 0 {
				t.Errorf("%d connections refused across a SIGKILL and a restart", n)
			}
			var longest time.Duration
			for _, q := range res.Requests {
				if q.Class == "" && q.Latency > longest {
					longest = q.Latency
				}
			}
			t.Logf("%s: longest wait of a successful request across SIGKILL and restart: %v; failures by class: %v", c.unit, longest, res.Failed)
			ures := lu.stop()
			t.Logf("load over %s: %v", sock, ures)
			if n := ures.Failed["ECONNREFUSED"] + ures.Failed["ENOENT"]; n != 0 || ures.OK == 0 {
				t.Errorf("over the Unix socket, %d connections refused or with no socket file, %d answered: %q", n, ures.OK, ures.Samples)
			}
			_, _ = m.Systemctl("stop", c.unit)
		})
	}
}

func waitNewMain(t *testing.T, m *systemdtest.Manager, u string, old int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if p := mainPID(m, u); p != 0 && p != old && m.Show(u, "ActiveState") == "active" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: no new main process after %d:\n%s", u, old, m.Journal(u))
}

// TestFDStorePlainStop: `systemctl stop` under load of a service whose
// sockets are in systemd's fd store — handoff run --fdstore, and the library
// with Options.FDStore — with slow requests that keep the generation
// draining. systemd empties the fd store once the unit has stopped (a
// restart keeps it): a connection the kernel queued meanwhile would be reset
// then, after its client sent its request. For a plain stop (systemd's job
// for the unit says "stop") the sockets are held back as the program's own
// — a Unix socket's file is removed — so that connections are refused
// instead, and the requests in flight complete.
func TestFDStorePlainStop(t *testing.T) {
	m := systemdtest.Start(t)
	const sock = "/run/fdstore-stop.sock"
	for _, c := range fdStoreUnits(sock) {
		t.Run(c.unit, func(t *testing.T) {
			addr := startFDStoreUnit(t, m, c.unit, c.repl, "Restart=on-failure")
			l := load("http://"+addr, 200, 1500*time.Millisecond)
			lu := loadVia(fmt.Sprintf("/proc/%d/root%s", m.PID, sock), 100)
			l.more(t, 0, 50)
			lu.more(t, 0, 20)
			if out, err := m.Systemctl("stop", c.unit); err != nil {
				t.Fatalf("stop: %v %s\n%s", err, out, m.Journal(c.unit))
			}
			// Load on a moment after the stop: every connect is refused.
			time.Sleep(300 * time.Millisecond)
			res, ures := l.stop(), lu.stop()
			t.Logf("tcp: %v", res)
			t.Logf("unix: %v", ures)
			for _, r := range []struct {
				what string
				r    *loadcheck.Result
			}{{"tcp", res}, {"unix", ures}} {
				if n := r.r.Failed["ECONNRESET"] + r.r.Failed["EOF"] + r.r.Failed["timeout"]; n > 0 {
					t.Errorf("%s: %d requests reset or cut after they were sent (%v): queued during the drain, and reset when systemd emptied the fd store\n%s", r.what, n, r.r.Failed, m.Journal(c.unit))
				}
			}
			if c.unit == "httpserver.service" {
				// The library holds new connections back once systemd has
				// let go of the sockets, and its server takes those queued.
				if j := m.Journal(c.unit); !strings.Contains(j, "event=stop.held") {
					t.Errorf("the library's stop did not hold new connections back (no event=stop.held)\n%s", j)
				}
			}
		})
	}
}

// fdStoreUnit is a unit of examples/systemd with the replacements that put
// its sockets — TCP at @ADDR@, and Unix at sock — in systemd's fd store.
type fdStoreUnit struct {
	unit string
	repl []string
}

// fdStoreUnits are the library's server and handoff run, each with a TCP
// socket and the Unix socket sock in the fd store.
func fdStoreUnits(sock string) []fdStoreUnit {
	return []fdStoreUnit{
		{"httpserver.service", []string{"/usr/local/bin/httpserver", bin("httpserver"), "0.0.0.0:8080", "@ADDR@,unix://" + sock, "-pidfile", "-fdstore -pidfile"}},
		{"app-notify.service", []string{"/usr/local/bin/handoff", bin("handoff"), "/usr/local/bin/app", bin("app"), "0.0.0.0:80", "@ADDR@", "handoff run", "handoff run --fdstore --listen api=unix://" + sock}},
	}
}

// startFDStoreUnit installs the unit name with repl (@ADDR@ a free address, which it
// returns), restart as its Restart= lines and FileDescriptorStoreMax=8,
// starts it, and waits until the sockets are in the fd store — they go
// there once the program is ready.
func startFDStoreUnit(t *testing.T, m *systemdtest.Manager, name string, repl []string, restart string) string {
	t.Helper()
	addr := proc.FreeAddr(t)
	repl = slices.Clone(repl)
	for i := range repl {
		repl[i] = strings.ReplaceAll(repl[i], "@ADDR@", addr)
	}
	text := unit(t, m, name, repl...)
	text = strings.Replace(text, "Restart=on-failure", restart+"\nFileDescriptorStoreMax=8", 1)
	m.Install(name, text)
	if out, err := m.Systemctl("start", name); err != nil {
		t.Fatalf("start: %v %s\n%s", err, out, m.Journal(name))
	}
	waitActive(t, m, name)
	for deadline := time.Now().Add(5 * time.Second); m.Show(name, "NFileDescriptorStore") == "0"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no descriptor in the fd store after 5 s:\n%s", m.Journal(name))
		}
	}
	return addr
}
