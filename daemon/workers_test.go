//go:build linux

package daemon_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// rawStatus asks the control socket for the status, without running the
// command: fast enough to sample a roll every few milliseconds.
func (d *runningDaemon) rawStatus() (control.Status, error) {
	var st control.Status
	c, err := net.DialTimeout("unix", d.control, 5*time.Second)
	if err != nil {
		return st, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(`{"cmd":"status"}`)); err != nil {
		return st, err
	}
	err = json.NewDecoder(c).Decode(&st)
	return st, err
}

// waitWorkers waits until n workers are ready and returns their pids by
// index.
func (d *runningDaemon) waitWorkers(n int) []int {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := d.rawStatus()
		var pids []int
		for _, w := range st.Workers {
			if w.State == "ready" {
				pids = append(pids, w.PID)
			}
		}
		if err == nil && len(pids) == n && len(st.Generations) == n {
			return pids
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%d workers ready (%v), want %d: %+v\n%s", len(pids), err, n, st, d.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampler records, until stopped, the fewest workers ready and the most
// processes handoff runs, from its status and from the kernel's list of
// its children that run the program.
type sampler struct {
	minReady, maxProcs, maxKernel, samples int
	stop                                   func()
}

func (d *runningDaemon) sample(prog string) *sampler {
	s := &sampler{minReady: 1 << 30}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			st, err := d.rawStatus()
			if err != nil {
				continue
			}
			ready := 0
			for _, w := range st.Workers {
				if w.State == "ready" {
					ready++
				}
			}
			kernel := 0
			for _, p := range proc.Children(d.cmd.Process.Pid) {
				if b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline"); strings.Contains(string(b), prog) {
					kernel++
				}
			}
			s.minReady, s.maxProcs, s.maxKernel = min(s.minReady, ready), max(s.maxProcs, len(st.Generations)), max(s.maxKernel, kernel)
			s.samples++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	s.stop = func() { cancel(); wg.Wait() }
	return s
}

// TestWorkersRoll: three workers, a reload under open-loop load rolls them
// one at a time (--max-surge 1): no request fails, three workers are ready
// throughout and never more than four processes run; every new worker gets
// its own LISTEN_PID and its index.
func TestWorkersRoll(t *testing.T) {
	alongside(t)
	d := startDaemon(t, nil, "--workers", "3", "--max-surge", "1")
	old := d.waitWorkers(3)
	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200, Slow: 500 * time.Millisecond, SlowEvery: 100 * time.Millisecond})
	// Every old worker serves before the reload (the kernel spreads the
	// connections unevenly, so wait for each rather than for a total).
	for _, p := range old {
		if err := load.WaitAnswers(p, 5, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s := d.sample(d.prog)
	out, code := d.reload()
	if code != 0 {
		t.Fatalf("reload: exit %d: %s\n%s", code, out, d.log())
	}
	d.waitAlone(15 * time.Second) // wait for 3 processes: the old ones have drained
	s.stop()
	for _, p := range d.waitWorkers(3) {
		if err := load.WaitAnswers(p, 5, 10*time.Second); err != nil {
			t.Error("a new worker does not serve:", err)
		}
	}
	cancel()
	res := load.Wait()
	t.Logf("reload: %s; load: %v; %d samples: fewest ready %d, most processes %d (kernel %d)", out, res, s.samples, s.minReady, s.maxProcs, s.maxKernel)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	// The kernel's count sees the 3 workers at least, or it looks at the
	// wrong processes and proves nothing.
	if s.minReady < 3 || s.maxProcs > 4 || s.maxKernel > 4 || s.maxKernel < 3 || s.samples < 10 {
		t.Errorf("during the roll: fewest ready %d (want 3), most processes %d by status and %d by the kernel (want at most 4), %d samples", s.minReady, s.maxProcs, s.maxKernel, s.samples)
	}
	now := d.waitWorkers(3)
	for i, p := range now {
		if p == old[i] {
			t.Errorf("worker %d still runs the old process %d", i, p)
		}
		if res.Pids[p] == 0 || res.Pids[old[i]] == 0 {
			t.Errorf("worker %d: old pid %d answered %d, new %d answered %d; want both", i, old[i], res.Pids[old[i]], p, res.Pids[p])
		}
	}
	// Each worker saw its own LISTEN_PID (examples/app prints it).
	for _, p := range now {
		if !strings.Contains(d.log(), "app: pid="+strconv.Itoa(p)+" LISTEN_PID="+strconv.Itoa(p)+" ") {
			t.Errorf("worker %d did not get LISTEN_PID=%d:\n%s", p, p, d.log())
		}
	}
	d.stop()
}

// TestWorkersRollFailsHalfway: worker 1 of the new release dies at start.
// The reload fails saying so; worker 0, already replaced, is put back to
// the old release; three workers of the old release serve on; no request
// fails.
func TestWorkersRollFailsHalfway(t *testing.T) {
	alongside(t)
	root := t.TempDir()
	b, err := os.ReadFile(appBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1", "v2"} {
		dir := filepath.Join(root, "releases", v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		proc.WriteExec(t, filepath.Join(dir, "app.bin"), b)
	}
	proc.WriteExec(t, filepath.Join(root, "releases", "v1", "app"), []byte("#!/bin/sh\nexec ./app.bin\n"))
	proc.WriteExec(t, filepath.Join(root, "releases", "v2", "app"), []byte("#!/bin/sh\n[ \"$HANDOFF_WORKER\" = 1 ] && { echo 'worker 1 cannot start' >&2; exit 3; }\nexec ./app.bin\n"))
	current := filepath.Join(root, "current")
	proc.Flip(t, current, filepath.Join("releases", "v1"))
	d := startDaemon(t, []string{"./app"}, "--chdir", current, "--workers", "3")
	d.waitWorkers(3)

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200})
	if err := load.WaitAnswers(0, 40, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	s := d.sample("app.bin")
	proc.Flip(t, current, filepath.Join("releases", "v2"))
	out, code := d.reload()
	s.stop()
	if code == 0 || !strings.Contains(out, "worker 1") || !strings.Contains(out, "exit status 3") || !strings.Contains(out, "put back the 1 worker") {
		t.Errorf("reload: exit %d, %q; want a failure naming worker 1, its exit status and the worker put back", code, out)
	}
	pids := d.waitWorkers(3)
	d.waitAlone(15 * time.Second)
	cancel()
	res := load.Wait()
	t.Logf("reload: %s; load: %v; fewest ready %d, most processes %d", out, res, s.minReady, s.maxProcs)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if s.minReady < 3 || s.maxProcs > 4 || s.maxKernel < 3 {
		t.Errorf("during the roll and the put-back: fewest ready %d (want 3), most processes %d (want at most 4), the kernel's count at most %d (want 3 or more)", s.minReady, s.maxProcs, s.maxKernel)
	}
	for i, p := range pids {
		dir, _ := os.Readlink("/proc/" + strconv.Itoa(p) + "/cwd")
		if !strings.HasSuffix(dir, filepath.Join("releases", "v1")) {
			t.Errorf("worker %d (pid %d) runs in %s, want releases/v1", i, p, dir)
		}
	}
	d.stop()
}

// TestWorkerKilled: SIGKILL to one of three workers under load: it alone is
// restarted, the others serve on, and no request fails beyond those the
// killed worker held (it is frozen first and its connections counted).
func TestWorkerKilled(t *testing.T) {
	alongside(t)
	d := startDaemon(t, nil, "--workers", "3")
	pids := d.waitWorkers(3)
	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200})
	if err := load.WaitAnswers(pids[1], 10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(pids[1], syscall.SIGSTOP)
	held := openConns(pids[1])
	_ = syscall.Kill(pids[1], syscall.SIGKILL)
	d.waitRecord(10*time.Second, "event=generation.crashed", "gen_pid="+strconv.Itoa(pids[1]))
	now := d.waitWorkers(3)
	if now[0] != pids[0] || now[2] != pids[2] || now[1] == pids[1] {
		t.Errorf("workers %v after the kill of %d, were %v: want only worker 1 replaced", now, pids[1], pids)
	}
	if err := load.WaitAnswers(now[1], 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	res := load.Wait()
	t.Logf("load: %v; the killed worker held %d connections", res, held)
	if res.Failures() > held || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d, more than the %d connections the killed worker held: %q", res.Failures(), res.Failed, res.Retried, held, res.Samples)
	}
	st := d.status()
	if len(st.Workers) != 3 || st.Workers[1].Restarts != 1 || st.Workers[0].Restarts != 0 || st.Restarts != 1 {
		t.Errorf("status: %+v; want worker 1 restarted once, the others not", st.Workers)
	}
	d.stop()
}

// openConns counts the established TCP connections process pid holds: its
// socket descriptors whose inode /proc/net/tcp{,6} lists in state 01.
func openConns(pid int) int {
	established := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "01" {
				established[fs[9]] = true
			}
		}
	}
	ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	n := 0
	for _, e := range ents {
		l, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + e.Name())
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && established[strings.TrimSuffix(ino, "]")] {
			n++
		}
	}
	return n
}

// TestWorkerOverMemory: worker 1 grows past --max-memory; it alone is
// replaced, the new one ready first, with no request failed.
func TestWorkerOverMemory(t *testing.T) {
	spawns(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	script, _ := filepath.Abs("testdata/plain_server.py")
	balloon := filepath.Join(t.TempDir(), "balloon")
	t.Setenv("BALLOON_FILE", balloon)
	d := startDaemon(t, []string{py, script}, "--workers", "3", "--ready", "accept", "--max-memory", "48M")
	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200})
	rec := d.waitRecord(20*time.Second, "event=worker.over_memory", "worker=1")
	d.waitRecord(20*time.Second, "event=worker.replaced", "worker=1")
	pids := d.waitWorkers(3)
	if err := load.WaitAnswers(pids[1], 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	res := load.Wait()
	t.Logf("%s; load: %v", rec, res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if rss, _ := strconv.ParseInt(rec.Get("rss_bytes"), 10, 64); rss <= 48<<20 {
		t.Errorf("the record gives rss_bytes=%d, want above 48 MiB", rss)
	}
	st := d.status()
	for _, w := range st.Workers {
		if w.RSSBytes <= 0 || w.RSSBytes > 48<<20 {
			t.Errorf("worker %d: rss %d after the replacement", w.Index, w.RSSBytes)
		}
	}
	d.stop()
}

// TestWorkersSignalSelfUpgradeStop: with two workers, `handoff signal`
// reaches both; SIGUSR2 hands the sockets to a new handoff that starts its
// own two workers, with no request failed; a stop with --stop-delay has both
// serve on through the delay, then drains them, and handoff exits 0.
func TestWorkersSignalSelfUpgradeStop(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil, "--workers", "2", "--stop-delay", "1s")
	old := d.waitWorkers(2)
	out, err := exec.Command(handoffBin, "signal", "--control", d.control, "WINCH").CombinedOutput()
	if err != nil || !strings.Contains(string(out), strconv.Itoa(old[0])) || !strings.Contains(string(out), strconv.Itoa(old[1])) {
		t.Errorf("handoff signal WINCH: %v %q; want both workers %v", err, out, old)
	}

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200})
	if err := load.WaitAnswers(0, 40, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	oldHandoff := d.cmd.Process.Pid
	_ = syscall.Kill(oldHandoff, syscall.SIGUSR2)
	if err := d.waitExit(20 * time.Second); err != nil {
		t.Errorf("old handoff: %v", err)
	}
	now := d.waitWorkers(2)
	st := d.status()
	if st.PID == oldHandoff || now[0] == old[0] || now[1] == old[1] {
		t.Fatalf("after SIGUSR2: handoff %d (was %d), workers %v (were %v)", st.PID, oldHandoff, now, old)
	}
	for _, p := range now {
		if err := load.WaitAnswers(p, 20, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// The stop: both workers answer on through the stop delay.
	stopAt := time.Now()
	_ = syscall.Kill(st.PID, syscall.SIGTERM)
	for _, p := range now {
		if err := load.WaitAnswers(p, load.Answers(p)+20, 5*time.Second); err != nil {
			t.Errorf("during the stop delay: %v", err)
		}
	}
	during := time.Since(stopAt)
	cancel()
	res := load.Wait()
	t.Logf("load: %v; both workers answered 20 more within %v of SIGTERM", res, during)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	deadline := time.Now().Add(20 * time.Second)
	for (proc.Alive(st.PID) || proc.Alive(now[0]) || proc.Alive(now[1])) && time.Now().Before(deadline) {
		proc.ReapAll()
		time.Sleep(20 * time.Millisecond)
	}
	if proc.Alive(st.PID) || proc.Alive(now[0]) || proc.Alive(now[1]) {
		t.Errorf("handoff %d or its workers %v still run after the stop", st.PID, now)
	}
	if n := strings.Count(d.log(), `"event":"generation.draining"`); n < 4 {
		t.Errorf("%d drains logged, want the 2 workers of each handoff", n)
	}
}
