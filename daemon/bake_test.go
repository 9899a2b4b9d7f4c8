//go:build linux

package daemon_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestBakeRollsBackLyingRelease reloads, under load and with a long bake
// window, into a release that sends READY=1 and then does not serve — one
// that never accepts, one whose every handler blocks: each is rolled back
// during the window, the reload fails saying why, and the old generation
// serves on. A healthy release under the same load bakes and takes over.
func TestBakeRollsBackLyingRelease(t *testing.T) {
	alongside(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	lying, err := filepath.Abs("testdata/lying_server.py")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode, want string
		flags      []string
	}{
		{"noaccept", "takes no connection", nil},
		// With two workers, the probe pauses both old ones.
		{"noaccept", "takes no connection", []string{"--workers", "2"}},
		{"hang", "answers nothing", nil},
		// The program serves, but its health check (an address only it
		// would serve) never answers.
		{"unhealthy", "failed the health check tcp://", []string{"--health", "tcp://" + proc.FreeAddr(t)}},
		{"healthy", "", nil},
	} {
		t.Run(strings.Join(append([]string{c.mode}, c.flags...), " "), func(t *testing.T) {
			// A bake longer than the test waits: the reload ends early only
			// if the release is rolled back.
			bake := "60s"
			if c.want == "" {
				bake = "2s"
			}
			d := startDaemon(t, nil, append([]string{"--bake", bake, "--drain-timeout", "2s"}, c.flags...)...)
			first := d.serving()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 100, Timeout: 3 * time.Second})
			if c.mode == "noaccept" || c.mode == "hang" {
				proc.WriteExec(t, d.prog, []byte("#!/bin/sh\nexec "+py+" "+lying+" "+c.mode+"\n"))
			}
			out, code := d.reload()
			cancel()
			r := load.Wait()
			t.Logf("reload: exit %d: %s; load: %v", code, out, r)
			if c.want == "" {
				if code != 0 {
					t.Fatalf("a healthy release was rolled back: %s\n%s", out, d.log())
				}
				d.stop()
				return
			}
			if code != 1 || !strings.Contains(out, "failed its bake window: it "+c.want) {
				t.Fatalf("reload into a release that %s: exit %d: %s\n%s", c.mode, code, out, d.log())
			}
			if p := d.serving(); p != first {
				t.Errorf("serving pid %d after the rollback, want %d", p, first)
			}
			d.stop()
		})
	}
}
