//go:build linux

package upgrader_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestPID1StopDelay runs examples/httpserver as PID 1 of a pid namespace, as
// a container's entrypoint, with a 2 s stop delay, under open-loop load over
// fresh and keep-alive connections: a SIGHUP is refused (a handover would
// end the container) while it serves on; then, as a container runtime stops
// it, SIGTERM: /healthz answers 503 at once, every request sent during the
// delay succeeds, and it drains and exits 0 after the delay.
func TestPID1StopDelay(t *testing.T) {
	spawns(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1) for a pid namespace")
	}
	s := launch(t, nil, []string{unshare, "--pid", "--fork", "--mount-proc"}, "-stop-delay", "2s", "-drain-timeout", "5s", "-idle-grace", "300ms")
	// The pid file holds 1, the server's pid in its namespace: find its pid
	// here, the child of unshare.
	server := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && (server == 0 || logrec.Find(s.records(), "event=ready") == nil); time.Sleep(10 * time.Millisecond) {
		server = proc.ChildOf(s.cmd.Process.Pid)
	}
	if server == 0 || logrec.Find(s.records(), "event=ready") == nil {
		t.Fatalf("the server did not start as PID 1:\n%s", s.log())
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + s.addr, Rate: 200})
	if err := load.WaitAnswers(0, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	_ = syscall.Kill(server, syscall.SIGHUP)
	s.waitRecord(5*time.Second, "event=upgrade.refused", "err~PID 1")
	if health(t, s.addr) != http.StatusOK {
		t.Error("/healthz does not answer 200 while serving")
	}

	stopAt := time.Now()
	_ = syscall.Kill(server, syscall.SIGTERM)
	s.waitRecord(5*time.Second, "event=stop.delayed", "stop_delay=2s")
	if code := health(t, s.addr); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz answers %d during the stop delay, want 503", code)
	}
	// Load until just before the delay ends: all of it must be served.
	time.Sleep(time.Until(stopAt.Add(1800 * time.Millisecond)))
	cancel()
	res := load.Wait()
	t.Logf("load through the refused SIGHUP and the stop delay: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	select {
	case err := <-exited:
		took := time.Since(stopAt)
		t.Logf("exited %v after SIGTERM: %v", took.Round(time.Millisecond), err)
		if err != nil || took < 2*time.Second {
			t.Errorf("exited %v after SIGTERM with %v; want status 0 after the 2 s delay:\n%s", took, err, s.log())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15 s after SIGTERM:\n%s", s.log())
	}
	if logrec.Find(s.records(), "event=stop.delay_over") == nil {
		t.Errorf("the log does not say when the delay ended:\n%s", s.log())
	}
	if left := proc.Descendants(os.Getpid()); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
}

// health returns the status of GET /healthz on a fresh connection.
func health(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
