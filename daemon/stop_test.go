package daemon_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestStopRefusesNotResets stops handoff under load while slow requests keep
// the generation draining: connections that arrive once it has stopped
// accepting are refused (the client knows nothing was sent), none is
// accepted by the kernel only to be reset when handoff exits, and the
// requests in flight complete. Also when the stop comes during a reload.
func TestStopRefusesNotResets(t *testing.T) {
	for _, duringReload := range []bool{false, true} {
		name := "plain"
		if duringReload {
			name = "during reload"
		}
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			resC := make(chan *loadcheck.Result, 1)
			go func() {
				resC <- loadcheck.Run(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 200, Slow: 1500 * time.Millisecond, SlowEvery: 100 * time.Millisecond})
			}()
			time.Sleep(700 * time.Millisecond) // load, and slow requests in flight
			if duringReload {
				proc.WriteExec(t, d.prog, []byte("#!/bin/sh\nsleep 5\nexec "+appBin+"\n"))
				go d.reload()
				d.waitRecord(5*time.Second, "generation started", "gen=2")
			}
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			d.waitRecord(5*time.Second, "draining", "gen=1")
			// Load on through the drain, which the slow requests make last.
			time.Sleep(1200 * time.Millisecond)
			cancel()
			r := <-resC
			t.Logf("%v", r)
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("handoff did not exit:\n%s", d.log())
			}
			// (A reset during the handshake, as the last generation closes
			// the socket, is a refusal: the request was never sent.)
			if n := r.Failed["ECONNRESET"] + r.Failed["EOF"]; n > 0 {
				t.Errorf("%d requests reset or cut after they were sent (%v): their connections were accepted by the kernel and nobody served them", n, r.Failed)
			}
			if r.Failed["ECONNREFUSED"] == 0 {
				t.Errorf("no request was refused after the stop: %v", r.Failed)
			}
		})
	}
}
