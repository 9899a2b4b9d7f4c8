package e2e_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/systemdtest"
)

// The tests that mostly wait — for systemd's watchdog, a start timeout, a
// unit's start — run side by side (t.Parallel), after the others: each has
// a systemd of its own, and none counts a load's failures. Those that do run
// one at a time, alone.

// bins are handoff, examples/app and examples/httpserver, built once into a
// directory systemd's services can read.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here runs a real systemd or containers, and skips.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "handoff-e2e-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for name, pkg := range map[string]string{"handoff": "..", "app": "../examples/app", "httpserver": "../examples/httpserver"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// unit reads a unit file from examples/systemd — the files the README ships
// are the ones tested — and applies replacements (old, new, old, new, …; an
// old string that starts with '?' may be missing).
// A Type=notify-reload unit becomes Type=notify with a SIGHUP ExecReload on
// systemd older than 253, as the unit's comment says to do.
func unit(t *testing.T, m *systemdtest.Manager, name string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(repl); i += 2 {
		old, optional := strings.CutPrefix(repl[i], "?")
		if !strings.Contains(s, old) && !optional {
			t.Fatalf("%s has no %q to replace", name, old)
		}
		s = strings.ReplaceAll(s, old, repl[i+1])
	}
	if m.Version < 253 {
		s = strings.Replace(s, "Type=notify-reload", "Type=notify\nExecReload=/bin/kill -HUP $MAINPID", 1)
	}
	return s
}

func bin(name string) string { return filepath.Join(binDir, name) }

// execDir is a directory for binaries a test replaces, readable by systemd's
// services.
func execDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(binDir, "exec-")
	if err == nil {
		err = os.Chmod(d, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// load runs an open-loop POST load until the returned stop is called, with
// a request of duration slow every 250 ms if slow > 0.
func load(url string, rate int, slow time.Duration) *runningLoad {
	return loadEvery(url, rate, slow, 250*time.Millisecond)
}

// loadEvery is load with a slow request every every.
func loadEvery(url string, rate int, slow, every time.Duration) *runningLoad {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := loadcheck.Config{URL: url, Rate: rate}
	if slow > 0 {
		cfg.Slow, cfg.SlowEvery = slow, every
	}
	return &runningLoad{loadcheck.Start(ctx, cfg), cancel}
}

// runningLoad is a load under way: tests wait on its answers, then stop it.
type runningLoad struct {
	*loadcheck.Load
	cancel func()
}

// stop ends the load and returns what happened.
func (l *runningLoad) stop() *loadcheck.Result {
	l.cancel()
	return l.Wait()
}

// more waits until pid (0: any) has answered n requests more than so far.
func (l *runningLoad) more(t *testing.T, pid, n int) {
	t.Helper()
	if err := l.WaitAnswers(pid, l.Answers(pid)+n, 15*time.Second); err != nil {
		t.Fatal(err)
	}
}

// loadVia runs an open-loop POST load over the Unix socket at path until the
// returned stop is called.
func loadVia(path string, rate int) *runningLoad {
	ctx, cancel := context.WithCancel(context.Background())
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	return &runningLoad{loadcheck.Start(ctx, loadcheck.Config{URL: "http://unix", Rate: rate, Dial: dial}), cancel}
}

// checkLoad fails t if a request failed or was retried, and then shows the
// unit's drain and warning lines, which tell what the server did meanwhile.
func checkLoad(t *testing.T, res *loadcheck.Result, m *systemdtest.Manager, unit string) {
	t.Helper()
	t.Logf("load: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		var lines []string
		for _, l := range strings.Split(m.Output(unit), "\n") {
			if strings.Contains(l, "drain") || strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") {
				lines = append(lines, l)
			}
		}
		t.Errorf("failed=%d %v retried=%d %q\n%s:\n%s", res.Failures(), res.Failed, res.Retried, res.Samples, unit, strings.Join(lines, "\n"))
	}
}

// waitActive waits until the unit is active.
func waitActive(t *testing.T, m *systemdtest.Manager, u string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if m.Show(u, "ActiveState") == "active" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not active:\n%s", u, m.Journal(u))
}

// answeredBy posts once on a fresh connection and returns the pid that
// answered.
func answeredBy(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Post("http://"+addr+"/", "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 64)
	n, _ := resp.Body.Read(b)
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(b[:n]), "pid=")))
	return pid
}

func mainPID(m *systemdtest.Manager, u string) int {
	p, _ := strconv.Atoi(m.Show(u, "MainPID"))
	return p
}
