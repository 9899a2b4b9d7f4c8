//go:build linux

package upgrader_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// releases is a directory of releases side by side, with a `current` symlink
// to one of them, as a deployment tool leaves it.
type releases struct {
	t    *testing.T
	root string
}

// newReleases returns releases v1, v2 and v3, with current naming v1.
func newReleases(t *testing.T) releases {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := releases{t, root}
	for _, v := range []string{"v1", "v2", "v3"} {
		r.add(v)
	}
	r.flip("v1")
	return r
}

// add installs examples/httpserver as release name.
func (r releases) add(name string) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Join(r.root, "releases", name), 0o755); err != nil {
		r.t.Fatal(err)
	}
	proc.CopyExec(r.t, serverBin, filepath.Join(r.root, "releases", name, "app"))
}

// flip points current at release name, atomically.
func (r releases) flip(name string) {
	r.t.Helper()
	proc.Flip(r.t, filepath.Join(r.root, "current"), filepath.Join("releases", name))
}

func (r releases) dir(name string) string { return filepath.Join(r.root, "releases", name) }

// startRelease starts current/app in current, with $PWD naming current if pwd
// is set, and with no $PWD otherwise, as systemd starts a service with
// WorkingDirectory=.
func startRelease(t *testing.T, r releases, pwd bool) *server {
	t.Helper()
	current := filepath.Join(r.root, "current")
	s := &server{t: t, dir: r.root, bin: filepath.Join(current, "app"), pidfile: filepath.Join(r.root, "app.pid"),
		logPath: filepath.Join(r.root, "log"), seen: map[int]bool{}, addr: proc.FreeAddr(t)}
	logf, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command(s.bin, "-log-format", "json", "-pidfile", s.pidfile, "-addr", s.addr)
	s.cmd.Dir = current
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PWD=") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	if pwd {
		s.cmd.Env = append(s.cmd.Env, "PWD="+current)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.cleanup)
	s.waitPid(0, 10*time.Second)
	return s
}

// cwd returns the working directory of pid.
func cwd(t *testing.T, pid int) string {
	t.Helper()
	d, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReleaseSymlink runs a library-mode server from a `current` symlink to
// one of several releases, flips the symlink and removes old releases
// between upgrades. Without $PWD every generation starts in the first
// release's directory: the upgrade says so, and once that directory is gone
// it fails saying why, while the old generation serves on. With $PWD set to
// the symlink, each generation starts in its own release.
func TestReleaseSymlink(t *testing.T) {
	spawns(t)
	if _, err := os.Stat("/proc/self/cwd"); err != nil {
		t.Skip("needs /proc")
	}
	t.Run("no PWD", func(t *testing.T) {
		r := newReleases(t)
		s := startRelease(t, r, false)
		first := s.pid()

		r.flip("v2")
		s.signal(syscall.SIGHUP)
		second := s.waitPid(first, 10*time.Second)
		warn := s.waitRecord(5*time.Second, "event=upgrade.workdir")
		if !warn.Match("binary="+filepath.Join(r.dir("v2"), "app")) || !warn.Match("dir="+r.dir("v1")) || !warn.Match("fix~PWD") {
			t.Errorf("warning: %s", warn)
		}
		if got := cwd(t, second); got != r.dir("v1") {
			t.Errorf("generation 2 runs in %s, want %s (where generation 1 started)", got, r.dir("v1"))
		}

		// The first release is removed: no generation can start there.
		if err := os.RemoveAll(r.dir("v1")); err != nil {
			t.Fatal(err)
		}
		r.flip("v3")
		s.signal(syscall.SIGHUP)
		fail := s.waitRecord(10*time.Second, "event=upgrade.failed")
		for _, w := range []string{"new binary could not be started", "the working directory " + r.dir("v1"), "is gone", "Environment=PWD="} {
			if !fail.Match("err~" + w) {
				t.Errorf("the failure's err lacks %q: %s", w, fail)
			}
		}
		if fail.Match("err~check that the binary exists") {
			t.Errorf("the failure blames the binary: %s", fail)
		}
		if p := s.pid(); p != second {
			t.Fatalf("pid file says %d, want %d still serving", p, second)
		}
		resp, err := http.Post("http://"+s.addr+"/", "text/plain", nil)
		if err != nil {
			t.Fatalf("the serving generation does not answer: %v", err)
		}
		resp.Body.Close()
		s.stop()
	})

	t.Run("PWD", func(t *testing.T) {
		r := newReleases(t)
		s := startRelease(t, r, true)
		pid := s.pid()
		if got := cwd(t, pid); got != r.dir("v1") {
			t.Fatalf("generation 1 runs in %s, want %s", got, r.dir("v1"))
		}
		for i, next := range []string{"v2", "v3"} {
			r.flip(next)
			if err := os.RemoveAll(r.dir([]string{"v1", "v2"}[i])); err != nil {
				t.Fatal(err)
			}
			s.signal(syscall.SIGHUP)
			pid = s.waitPid(pid, 10*time.Second)
			if got := cwd(t, pid); got != r.dir(next) {
				t.Errorf("generation %d runs in %s, want %s", i+2, got, r.dir(next))
			}
			if exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); exe != filepath.Join(r.dir(next), "app") {
				t.Errorf("generation %d runs %s, want %s", i+2, exe, filepath.Join(r.dir(next), "app"))
			}
		}
		if n := logrec.Count(s.records(), "event=upgrade.workdir"); n != 0 {
			t.Errorf("%d warnings about the directory with $PWD set:\n%s", n, s.log())
		}
		s.stop()
	})
}
