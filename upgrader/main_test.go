//go:build linux

package upgrader_test

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// serverBin is examples/httpserver, hijackBin testdata/hijackserver, sseBin
// examples/sse, slowReadyBin testdata/slowready and bakeBin
// testdata/bakeserver, built once for all tests.
var serverBin, hijackBin, sseBin, slowReadyBin, bakeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// The fast path: the machine's table and what runs in this
		// process; the tests that run generations skip (spawns), and
		// nothing is built.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "handoff-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin, hijackBin, sseBin = filepath.Join(dir, "httpserver"), filepath.Join(dir, "hijackserver"), filepath.Join(dir, "sse")
	slowReadyBin, bakeBin = filepath.Join(dir, "slowready"), filepath.Join(dir, "bakeserver")
	for _, b := range [][2]string{{serverBin, "../examples/httpserver"}, {hijackBin, "./testdata/hijackserver"}, {sseBin, "../examples/sse"}, {slowReadyBin, "./testdata/slowready"}, {bakeBin, "./testdata/bakeserver"}} {
		build := exec.Command("go", "build", "-o", b[0], b[1])
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", b[1]+":", err)
			os.Exit(1)
		}
	}
	// Generations whose parent exited are re-parented to this process, so
	// that the tests can see them exit and reap them.
	if err := proc.Subreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// spawns skips t under -short: it builds and runs servers, and the short
// tests need nothing exclusive and build nothing.
func spawns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs generations of a server: not under -short")
	}
}

// server is one run of examples/httpserver: its first generation and the
// ones that follow.
type server struct {
	t       *testing.T
	dir     string
	bin     string // the path generations exec; tests may replace the file
	addr    string
	pidfile string
	logPath string
	cmd     *exec.Cmd
	seen    map[int]bool // every generation pid seen in the pid file
	mark    string       // in the environment of every generation (proc.Mark)
}

// marks numbers the servers the tests launch, for proc.Mark.
var marks atomic.Int64

// alongside is for a test that may run beside the other such tests, after
// the serial ones: it waits on its processes far more than it computes,
// owns its server, directory and port, and looks for what its server left
// with proc.Marked, not among all of this process's descendants.
func alongside(t *testing.T) {
	t.Helper()
	spawns(t)
	t.Parallel()
}

// startServer starts examples/httpserver with args after -addr and -pidfile,
// env added to the environment, and waits until it serves.
func startServer(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	s := launch(t, env, nil, args...)
	s.waitPid(0, 10*time.Second)
	return s
}

// launch starts examples/httpserver, behind the command prefix if any, and
// does not wait.
func launch(t *testing.T, env, prefix []string, args ...string) *server {
	t.Helper()
	return launchWith(t, env, nil, prefix, args...)
}

// launchWith is launch with extra files, which the program gets as fds 3 on.
func launchWith(t *testing.T, env []string, files []*os.File, prefix []string, args ...string) *server {
	t.Helper()
	return launchBin(t, serverBin, env, files, prefix, append([]string{"-log-format", "json"}, args...)...)
}

// launchBin is launchWith for another program than examples/httpserver,
// which takes the same -addr and -pidfile flags.
func launchBin(t *testing.T, bin string, env []string, files []*os.File, prefix []string, args ...string) *server {
	t.Helper()
	spawns(t)
	dir := t.TempDir()
	s := &server{t: t, dir: dir, bin: filepath.Join(dir, "app"), pidfile: filepath.Join(dir, "app.pid"),
		logPath: filepath.Join(dir, "log"), seen: map[int]bool{}}
	proc.CopyExec(t, bin, s.bin)
	s.addr = proc.FreeAddr(t)
	hasAddr := false
	for _, a := range args {
		hasAddr = hasAddr || a == "-addr"
	}
	full := []string{"-pidfile", s.pidfile}
	if !hasAddr {
		full = append(full, "-addr", s.addr)
	}
	full = append(full, args...)
	logf, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := append(append(append([]string{}, prefix...), s.bin), full...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = append(os.Environ(), env...)
	s.mark = fmt.Sprintf("upgrader-%d-%d", os.Getpid(), marks.Add(1))
	proc.Mark(s.cmd, s.mark)
	s.cmd.ExtraFiles = files
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.cleanup)
	return s
}

// pid returns the pid in the pid file, or 0.
func (s *server) pid() int { return proc.ReadPid(s.pidfile) }

// waitPid waits until the pid file names a pid other than old and returns it.
func (s *server) waitPid(old int, timeout time.Duration) int {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p := s.pid(); p != 0 && p != old {
			s.seen[p] = true
			return p
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.t.Fatalf("pid file still says %d after %v; log:\n%s", old, timeout, s.log())
	return 0
}

// signal sends sig to the generation in the pid file.
// waitExited waits until the generation pid has exited: it drained.
func (s *server) waitExited(pid int, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for proc.Alive(pid) {
		if time.Now().After(deadline) {
			s.t.Fatalf("generation %d still runs after %v; log:\n%s", pid, timeout, s.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *server) signal(sig syscall.Signal) int {
	s.t.Helper()
	p := s.pid()
	if p == 0 {
		s.t.Fatal("no pid file")
	}
	if err := syscall.Kill(p, sig); err != nil {
		s.t.Fatalf("kill -%v %d: %v", sig, p, err)
	}
	return p
}

func (s *server) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// records returns the structured log records the generations wrote so far
// (the tests' programs log JSON).
func (s *server) records() []logrec.Record { return logrec.Parse(s.log()) }

// waitRecord waits until a log record matches terms (see logrec.Record.Match)
// and returns it.
func (s *server) waitRecord(timeout time.Duration, terms ...string) logrec.Record {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if r := logrec.Find(s.records(), terms...); r != nil {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("no log record with %q after %v; log:\n%s", terms, timeout, s.log())
	return nil
}

// stop sends SIGTERM to the current generation and waits for every
// generation to exit; the first generation, started by the test, must exit 0.
func (s *server) stop() {
	s.t.Helper()
	if p := s.pid(); p != 0 && proc.Alive(p) {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	first := s.cmd.Process.Pid
	for p := range s.seen {
		if p != first && !waitGone(p, 15*time.Second) {
			s.t.Errorf("generation pid %d still running after stop", p)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		// The first generation exits 0 whether it handed over or stopped.
		if err != nil {
			s.t.Errorf("first generation pid %d: %v", first, err)
		}
	case <-time.After(15 * time.Second):
		s.t.Errorf("first generation pid %d still running after stop", first)
	}
}

func (s *server) cleanup() {
	for p := range s.seen {
		if proc.Alive(p) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	for p := range s.seen {
		proc.Reap(p)
	}
}

// waitGone waits until pid has exited, reaping it if it is our child.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !proc.Alive(pid) {
			proc.Reap(pid)
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// waitAccepted waits until written is closed — a request went out on its own
// connection — and then until the server has accepted that connection: it
// answers a request on a connection opened after it, and a listener hands
// out connections in the order they came.
func waitAccepted(t *testing.T, addr string, written <-chan struct{}) {
	t.Helper()
	select {
	case <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("the request was not sent in 10 s")
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Post("http://"+addr+"/", "text/plain", nil)
	if err != nil {
		t.Fatalf("a request after it: %v", err)
	}
	resp.Body.Close()
}
