//go:build linux

package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

// TestBadInput checks that each bad command line gets one line that says what
// is wrong, and exit status 2.
func TestBadInput(t *testing.T) {
	spawns(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "--bogus", "--", "true"}, "flag provided but not defined: -bogus"},
		{[]string{"run", "--listen", ":8080"}, "no program given"},
		{[]string{"run", "--listen", "8080", "--", "true"}, "missing port"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--", "/nonexistent/app"}, "program /nonexistent/app"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--", "no-such-program-here"}, "not found in PATH"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--ready", "carrier-pigeon", "--", "true"}, "unknown mode"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--stop-signal", "NOPE", "--", "true"}, "unknown signal"},
		{[]string{"run", "--", "true"}, "no socket to pass"},
		{[]string{"reload", "extra"}, `unexpected argument "extra"`},
		{[]string{"run", "--listen", "127.0.0.1:80", "--chdir", "/nonexistent", "--", "true"}, "--chdir /nonexistent: not a directory"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--env-file", "/nonexistent/app.env", "--", "true"}, "no such file"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--stop-delay", "-1s", "--", "true"}, "--stop-delay must not be negative"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--pidfile", "/nonexistent/handoff.pid", "--", "true"}, "its directory /nonexistent does not exist"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--pidfile", "/", "--", "true"}, "/ is a directory"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--control", "/tmp/" + strings.Repeat("c", 120), "--", "true"}, "longer than the 107 a Unix socket's path may have"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--hold", "-1s", "--", "true"}, "--hold -1s is negative"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--hold", "soon", "--", "true"}, `invalid value "soon" for flag -hold`},
		{[]string{"run", "--listen", "127.0.0.1:80", "--control", "/tmp/" + strings.Repeat("c", 100), "--", "true"}, "with --hold the keeper offers the sockets at"},
		{[]string{"reload", "--timeout", "-1s"}, "--timeout -1s is negative"},
		{[]string{"status", "--timeout", "0s"}, "--timeout 0s is not positive"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--health", "http://127.0.0.1:9100/", "--hung-after", "0", "--", "true"}, "--health is checked during --bake and while serving, and both are off"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--hung-after", "-1s", "--", "true"}, "--hung-after must not be negative"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--max-memory", "NaN", "--", "true"}, "--max-memory NaN: not a finite positive size"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--max-memory", "1e30", "--", "true"}, "--max-memory 1e30: more than 1 EiB"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--hung-after", "100ms", "--", "true"}, "--hung-after 100ms: give at least 500ms"},
		{[]string{"run", "--listen", "127.0.0.1:80", "--bake", "5s", "--health", "udp://127.0.0.1:9100", "--", "true"}, "use http://HOST:PORT/PATH or tcp://HOST:PORT"},
		{[]string{"signal"}, "give one signal"},
		{[]string{"signal", "NOPE"}, "unknown signal"},
	}
	for _, c := range cases {
		cmd := exec.Command(handoffBin, c.args...)
		cmd.Env = append(os.Environ(), "LISTEN_FDS=", "LISTEN_PID=")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		msg := strings.TrimSpace(string(out))
		if code != 2 || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("handoff %q: exit %d, %q; want exit 2 and one line with %q", c.args, code, msg, c.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	spawns(t)
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"reload", "--help"}, {"status", "--help"}} {
		out, err := exec.Command(handoffBin, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage") || !strings.Contains(string(out), "xample") {
			t.Errorf("handoff %q: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command(handoffBin, "version").Output()
	line := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(line, "handoff ") || !strings.Contains(line, runtime.Version()) || strings.Contains(line, "\n") {
		t.Errorf("handoff version: %v %q; want one line with the Go release %s", err, out, runtime.Version())
	}
	// Built from a checkout, it names the commit (in a pseudo-version), and
	// says whether the tree was modified.
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Logf("not a git checkout: %v; version %q", err, line)
		return
	}
	if !strings.Contains(line, string(rev[:12])) {
		t.Errorf("handoff version: %q does not name the commit %s", line, rev[:12])
	}
	dirty, _ := exec.Command("git", "status", "--porcelain").Output()
	if modified := strings.Contains(line, "+dirty") || strings.Contains(line, "modified"); modified != (len(dirty) > 0) {
		t.Errorf("handoff version: %q, while the tree is modified=%v", line, len(dirty) > 0)
	}
}

// TestReloadWithoutDaemon says what to do when nothing runs.
func TestReloadWithoutDaemon(t *testing.T) {
	spawns(t)
	out, err := exec.Command(handoffBin, "reload", "--control", t.TempDir()+"/none.sock").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "is 'handoff run' running?") {
		t.Errorf("got %v: %s", err, out)
	}
}

// TestEnvTooBigToExec: variables each within Linux's limit for one, but too
// many together for an exec, fail the start with one line that gives the
// size and the fix, not a bare "argument list too long".
func TestEnvTooBigToExec(t *testing.T) {
	spawns(t)
	dir := t.TempDir()
	var b strings.Builder
	for i := range 24 {
		fmt.Fprintf(&b, "V%d=%s\n", i, strings.Repeat("x", 120000))
	}
	env := filepath.Join(dir, "big.env")
	if err := os.WriteFile(env, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(handoffBin, "run", "--env-file", env, "--control", filepath.Join(dir, "c.sock"),
		"--listen", "web=127.0.0.1:0", "--", "/bin/true").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("handoff run: %v, want exit 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "are more than Linux passes to a program (see getconf ARG_MAX) — shrink the env file") {
		t.Errorf("the failure does not say the environment is too large:\n%s", out)
	}
}
