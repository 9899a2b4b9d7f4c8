//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestPID1ReapsOrphans runs handoff as PID 1 of a pid namespace, as in a
// container, with a program that leaves 20 orphans behind at each start (a
// shell wrapper's background children), and --stop-delay 1s. After a reload
// under load, no zombie is left once the orphans have exited and no request
// fails; SIGUSR2 is refused; a SIGTERM from outside (the container
// runtime's) lets the generations serve on for the delay — no request sent
// meanwhile fails — then stops them, with exit status 0, and nothing is left
// running. The same with two workers.
func TestPID1ReapsOrphans(t *testing.T) {
	spawns(t) // serial: it kills and reaps whatever it finds below the test
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d workers", workers), func(t *testing.T) { testPID1ReapsOrphans(t, workers) })
	}
}

func testPID1ReapsOrphans(t *testing.T, workers int) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1) for a pid namespace")
	}
	dir := t.TempDir()
	prog, control, logPath := filepath.Join(dir, "app.sh"), filepath.Join(dir, "c.sock"), filepath.Join(dir, "log")
	proc.WriteExec(t, prog, []byte("#!/bin/sh\nfor i in $(seq 20); do (sleep 0.5 &); done\nexec "+appBin+"\n"))
	addr := proc.FreeAddr(t)
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", handoffBin, "run", "--log-format", "json", "--control", control, "--listen", "web="+addr, "--stop-delay", "1s", "--workers", fmt.Sprint(workers), "--", prog)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill() // unshare; the namespace dies with its PID 1
		for _, p := range proc.Descendants(os.Getpid()) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		proc.ReapAll()
	}()
	readLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	handoffPid := 0
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && (handoffPid == 0 || logrec.Find(logrec.Parse(readLog()), "event=generation.ready") == nil) {
		handoffPid = proc.ChildOf(cmd.Process.Pid)
		time.Sleep(20 * time.Millisecond)
	}
	if handoffPid == 0 || logrec.Find(logrec.Parse(readLog()), "event=generation.ready") == nil {
		t.Fatalf("handoff did not start in the namespace:\n%s", readLog())
	}
	if logrec.Find(logrec.Parse(readLog()), "event=reaper.started", "reason=handoff is PID 1") == nil {
		t.Errorf("handoff did not say it reaps orphans as PID 1:\n%s", readLog())
	}

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + addr, Rate: 100})
	defer cancel()
	out, err := exec.Command(handoffBin, "reload", "--control", control).CombinedOutput()
	if err != nil {
		t.Fatalf("reload: %v: %s\n%s", err, out, readLog())
	}
	// The orphans exit 0.5 s after their generation started, and PID 1
	// must reap every one: wait until no orphan is left, running or
	// zombie, in the namespace.
	left := orphans(handoffPid)
	for deadline := time.Now().Add(10 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = orphans(handoffPid) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d orphans left under handoff as PID 1, %d of them zombies (%d orphans started)", len(left), len(zombies(handoffPid)), 40*workers)
	}

	// SIGUSR2 would end the container: refused, with the reason.
	_ = syscall.Kill(handoffPid, syscall.SIGUSR2)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && logrec.Find(logrec.Parse(readLog()), "event=upgrade.refused") == nil; {
		time.Sleep(20 * time.Millisecond)
	}
	// The container runtime's stop; the load goes on until just before the
	// stop delay ends, and all of it must be served.
	stopAt := time.Now()
	_ = syscall.Kill(handoffPid, syscall.SIGTERM)
	time.Sleep(time.Until(stopAt.Add(800 * time.Millisecond)))
	cancel()
	res := load.Wait()
	t.Logf("load through the reload and the stop delay: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	select {
	case err := <-exited:
		took := time.Since(stopAt)
		t.Logf("exited %v after SIGTERM: %v", took.Round(time.Millisecond), err)
		if err != nil || took < time.Second {
			t.Errorf("handoff as PID 1 exited %v after SIGTERM with %v, want status 0 after the 1 s delay:\n%s", took, err, readLog())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("handoff as PID 1 did not exit after SIGTERM:\n%s", readLog())
	}
	if logrec.Find(logrec.Parse(readLog()), "event=stop.delay_over") == nil {
		t.Errorf("the log does not say when the stop delay ended:\n%s", readLog())
	}
	if !strings.Contains(readLog(), "SIGUSR2 refused: handoff is PID 1") {
		t.Errorf("no refusal of SIGUSR2 as PID 1 in the log:\n%s", readLog())
	}
	if left := proc.Descendants(os.Getpid()); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
}

// orphans returns the orphans the test's program left (its sleep
// processes) that are still under pid: running, or exited and not reaped.
func orphans(pid int) []int {
	var out []int
	for _, p := range proc.Descendants(pid) {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err == nil && strings.TrimSpace(string(comm)) == "sleep" {
			out = append(out, p)
		}
	}
	return out
}
