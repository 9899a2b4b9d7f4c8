//go:build linux

package drain_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestStopUnderLoad runs examples/shutdown — the tutorial server on
// drain.ListenAndServe — under open-loop load with requests in flight, and
// sends it SIGTERM while the load goes on for 2 s more, as a load balancer
// sends to an instance until it has deregistered it: /healthz turns 503, no
// request fails, and the process exits 0 once drained.
func TestStopUnderLoad(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "shutdown")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/shutdown").CombinedOutput(); err != nil {
		t.Fatalf("building examples/shutdown: %v\n%s", err, out)
	}
	addr := proc.FreeAddr(t)
	cmd := exec.Command(bin, "-addr", addr, "-stop-delay", "3s")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	health := func() int {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitHealth := func(code int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); health() != code; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("/healthz never answered %d: %s", code, out.String())
			}
		}
	}
	waitHealth(200)

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + addr, Rate: 400, Slow: 500 * time.Millisecond, SlowEvery: 100 * time.Millisecond})
	if err := load.WaitAnswers(0, 200, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitHealth(503)
	time.Sleep(2 * time.Second) // the load balancer still sends
	cancel()
	r := load.Wait()
	t.Logf("SIGTERM, then 2 s more of load: %v", r)
	if r.Failures() != 0 || r.Retried != 0 {
		t.Errorf("%d failed %v, %d retried: %q", r.Failures(), r.Failed, r.Retried, r.Samples)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exited with %v:\n%s", err, out.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("did not exit after the stop delay and the drain:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "msg=drained") {
		t.Errorf("no drained line in its log:\n%s", out.String())
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts after the exit", addr)
	}
}
