//go:build linux

package daemon_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// handoffBin and appBin are the handoff command and examples/app, built once.
var handoffBin, appBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// The fast path: the machine's tables, the parsers, the metrics
		// text — tests of this package's own (package daemon). Those that
		// run handoff skip (spawns), and nothing is built.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "handoff-daemon-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	handoffBin, appBin = filepath.Join(dir, "handoff"), filepath.Join(dir, "app")
	// Record the commit in handoff's build information, as `go install
	// -buildvcs=true` from a checkout does, whatever GOFLAGS says.
	vcs := "-buildvcs=auto"
	if exec.Command("git", "rev-parse", "--git-dir").Run() == nil {
		vcs = "-buildvcs=true"
	}
	for _, b := range [][2]string{{handoffBin, ".."}, {appBin, "../examples/app"}} {
		cmd := exec.Command("go", "build", vcs, "-o", b[0], b[1])
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", b[1], err)
			os.Exit(1)
		}
	}
	if err := proc.Subreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// spawns skips t under -short: it builds and runs handoff and programs,
// and the short tests need nothing exclusive and build nothing.
func spawns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs handoff and its programs: not under -short")
	}
}

// alongside is spawns for a test that may run beside other such tests (as
// many as go test's -parallel: 4 in the test command, GOMAXPROCS by
// default), after the serial ones: it waits on its processes
// far more than it computes, and owns its daemon, directory and ports. A
// test that sets the environment, or whose figures need the machine to
// itself, stays serial.
func alongside(t *testing.T) {
	t.Helper()
	spawns(t)
	t.Parallel()
}

// runningDaemon is one `handoff run` started by a test.
type runningDaemon struct {
	t       *testing.T
	dir     string
	addr    string
	control string
	prog    string // PROGRAM as handoff runs it; tests may replace the file
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when handoff has exited; then waitErr is set
	waitErr error
	mark    string // in the environment of handoff and all it starts (proc.Mark)
}

// marks numbers the daemons the tests start, for proc.Mark.
var marks atomic.Int64

// startDaemon runs `handoff run --listen web=ADDR FLAGS -- PROGRAM ARGS`,
// where PROGRAM is a copy of examples/app unless program is given, and waits
// until the first generation is ready.
func startDaemon(t *testing.T, program []string, flags ...string) *runningDaemon {
	t.Helper()
	return startDaemonIn(t, "", program, flags...)
}

// startDaemonIn is startDaemon with handoff's working directory set to
// workDir, if not "" (else the test's own directory for the daemon).
func startDaemonIn(t *testing.T, workDir string, program []string, flags ...string) *runningDaemon {
	t.Helper()
	return startDaemonOn(t, workDir, proc.FreeAddr(t), program, flags...)
}

// startDaemonOn is startDaemonIn with the socket "web" at addr, as --listen
// takes it (unix:///PATH for a Unix socket).
func startDaemonOn(t *testing.T, workDir, addr string, program []string, flags ...string) *runningDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &runningDaemon{t: t, dir: dir, addr: addr, control: filepath.Join(dir, "control.sock"),
		prog: filepath.Join(dir, "app"), logPath: filepath.Join(dir, "log"), exited: make(chan struct{})}
	if program == nil {
		b, err := os.ReadFile(appBin)
		if err != nil {
			t.Fatal(err)
		}
		proc.WriteExec(t, d.prog, b)
		program = []string{d.prog}
	}
	for i := range flags {
		flags[i] = strings.ReplaceAll(flags[i], "@ADDR@", d.addr)
	}
	args := append([]string{"run", "--log-format", "json", "--control", d.control, "--listen", "web=" + d.addr}, flags...)
	args = append(append(args, "--"), program...)
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(handoffBin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.Dir = dir
	d.mark = fmt.Sprintf("%s#%d", t.Name(), marks.Add(1))
	proc.Mark(d.cmd, d.mark)
	if workDir != "" {
		d.cmd.Dir = workDir
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.cleanup)
	d.waitRecord(15*time.Second, "event=generation.ready")
	return d
}

func (d *runningDaemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// records returns handoff's log records so far (it logs JSON here).
func (d *runningDaemon) records() []logrec.Record { return logrec.Parse(d.log()) }

// waitRecord waits until a log record matches terms (see
// logrec.Record.Match) and returns it.
func (d *runningDaemon) waitRecord(timeout time.Duration, terms ...string) logrec.Record {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if r := logrec.Find(d.records(), terms...); r != nil {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.t.Fatalf("no log record with %q after %v:\n%s", terms, timeout, d.log())
	return nil
}

// reload runs `handoff reload` and returns its output and exit status.
func (d *runningDaemon) reload() (string, int) {
	d.t.Helper()
	out, err := exec.Command(handoffBin, "reload", "--control", d.control).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSpace(string(out)), code
}

func (d *runningDaemon) status() control.Status {
	d.t.Helper()
	out, err := exec.Command(handoffBin, "status", "--json", "--control", d.control).Output()
	if err != nil {
		d.t.Fatalf("handoff status: %v", err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		d.t.Fatalf("handoff status: %v: %s", err, out)
	}
	return st
}

// serving returns the pid of the serving generation.
func (d *runningDaemon) serving() int {
	for _, g := range d.status().Generations {
		if g.State == "ready" {
			return g.PID
		}
	}
	return 0
}

// waitAlone waits until the serving generation is the only one: the ones
// before it have drained and exited, and every process left serves.
func (d *runningDaemon) waitAlone(timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	alone := func() bool {
		gens := d.status().Generations
		for _, g := range gens {
			if g.State != "ready" {
				return false
			}
		}
		return len(gens) > 0
	}
	for !alone() {
		if time.Now().After(deadline) {
			d.t.Fatalf("older generations still run after %v: %+v\n%s", timeout, d.status().Generations, d.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postSlow sends a request that takes d to answer, and returns where its
// outcome will come: nil for a 200.
func (d *runningDaemon) postSlow(dur time.Duration) <-chan error {
	c := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+d.addr+"/slow?d="+dur.String(), "text/plain", nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errStatus(resp.StatusCode)
			}
		}
		c <- err
	}()
	return c
}

// stop sends SIGTERM and waits for handoff to exit 0.
func (d *runningDaemon) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if d.waitErr != nil {
			d.t.Errorf("handoff exited with %v:\n%s", d.waitErr, d.log())
		}
	case <-time.After(40 * time.Second):
		d.t.Fatalf("handoff did not exit after SIGTERM:\n%s", d.log())
	}
}

// waitExit waits for handoff to exit, and returns what Wait returned.
func (d *runningDaemon) waitExit(timeout time.Duration) error {
	d.t.Helper()
	select {
	case <-d.exited:
		return d.waitErr
	case <-time.After(timeout):
		d.t.Fatalf("handoff did not exit within %v:\n%s", timeout, d.log())
		return nil
	}
}

func (d *runningDaemon) cleanup() {
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	// Kill and reap whatever this daemon left (a keeper, generations,
	// their orphans), and nothing of a test running alongside.
	if left := proc.KillMarked(d.mark); len(left) > 0 {
		d.t.Errorf("processes of %s still alive after SIGKILL: %v", d.mark, left)
	}
}

// zombies returns the children of pid that have exited but were not reaped.
func zombies(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, pp, _ := proc.Stat(p); st == "Z" && pp == pid {
			out = append(out, p)
		}
	}
	return out
}

func fdList(pid int) []string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		out = append(out, e.Name()+"="+l)
	}
	return out
}
