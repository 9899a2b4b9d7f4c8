//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// hangServer returns the command line of testdata/hang_server.py, or skips.
func hangServer(t *testing.T) []string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	script, err := filepath.Abs("testdata/hang_server.py")
	if err != nil {
		t.Fatal(err)
	}
	return []string{py, script}
}

// TestHungProcessReplaced: under load, with no reload under way, one
// serving process hangs — it accepts connections and reads their requests,
// and answers none. handoff finds it hung, pauses it so that it takes no
// more, and replaces it, the new one ready first: the load loses only the
// requests the hung process held, and nothing once the new one serves;
// status and the metrics count it.
func TestHungProcessReplaced(t *testing.T) {
	spawns(t) // serial: what it judges is how fast a process answers
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			metricsAddr := proc.FreeAddr(t)
			d := startDaemon(t, hangServer(t), "--workers", strconv.Itoa(workers), "--ready", "accept", "--metrics", metricsAddr, "--hung-after", "1s")
			var pids []int
			if workers > 1 {
				pids = d.waitWorkers(workers)
			} else {
				pids = []int{d.serving()}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 100, Timeout: 5 * time.Second})
			target := pids[len(pids)-1]
			if err := load.WaitAnswers(target, 20, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			hungAt := time.Now()
			if err := syscall.Kill(target, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			rec := d.waitRecord(15*time.Second, "event=worker.unresponsive", "gen_pid="+strconv.Itoa(target))
			found := time.Now()
			repl := d.waitRecord(15*time.Second, "event=worker.replaced", "why=unresponsive")
			newPID, _ := strconv.Atoi(repl.Get("gen_pid"))
			// Nothing is lost once the new one serves: it answers 100.
			if err := load.WaitAnswers(newPID, 100, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			cancel()
			res := load.Wait()
			t.Logf("hung pid %d found in about %v: %s; replaced by %d; load: %v", target, found.Sub(hungAt).Round(100*time.Millisecond), rec, newPID, res)
			if !strings.HasPrefix(rec.Get("reason"), "answers nothing") {
				t.Errorf("reason %q, want answers nothing", rec.Get("reason"))
			}
			// The checks count its connections, then the supervisor pauses
			// it, and counts them again once it has stopped
			// (worker.paused): on a busy machine more than a few reach it
			// between the two (a CI trial: 124 counted, 129 lost).
			paused := d.waitRecord(15*time.Second, "event=worker.paused", "gen_pid="+strconv.Itoa(target))
			held, _ := strconv.Atoi(paused.Get("conns"))
			if n, _ := strconv.Atoi(rec.Get("conns")); held < n {
				t.Errorf("worker.paused counts %d connections, fewer than the %d the checks counted before", held, n)
			}
			t.Logf("worker.paused: %d connections held once stopped", held)
			if res.Failures() > held+2 || res.Retried != 0 {
				t.Errorf("%d requests failed (%v), %d retried; the hung process held %d connections, and only those may fail", res.Failures(), res.Failed, res.Retried, held)
			}
			st := d.status()
			if st.Unresponsive != 1 {
				t.Errorf("status counts %d replaced as hung, want 1", st.Unresponsive)
			}
			if workers > 1 {
				for _, w := range st.Workers {
					if w.PID == newPID && w.Unresponsive != 1 {
						t.Errorf("worker %d: %d replaced as hung, want 1", w.Index, w.Unresponsive)
					}
				}
			}
			resp, err := http.Get("http://" + metricsAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "\nhandoff_unresponsive_total 1\n") {
				t.Errorf("metrics do not count the replacement:\n%s", body)
			}
			d.stop()
		})
	}
}

// TestBusyProcessNotReplaced: a process busy with requests slower than
// --hung-after is not hung, and is not replaced: four such requests that
// come together and nothing else; or slow requests four times a second,
// long-polling requests it never answers, and fast ones beside them.
func TestBusyProcessNotReplaced(t *testing.T) {
	spawns(t) // serial: what it judges is how fast a process answers
	t.Run("a burst of slow requests alone", func(t *testing.T) {
		d := startDaemon(t, hangServer(t), "--ready", "accept", "--hung-after", "1s")
		pid := d.serving()
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Post("http://"+d.addr+"/slow?d=2500ms", "text/plain", strings.NewReader("x"))
				if err == nil {
					resp.Body.Close()
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if r := logrec.Find(d.records(), "event=worker.unresponsive"); r != nil {
			t.Errorf("a busy process was found hung: %s", r)
		}
		if p := d.serving(); p != pid {
			t.Errorf("serving pid %d, want %d still", p, pid)
		}
		d.stop()
	})
	t.Run("slow requests, long polls and fast ones", func(t *testing.T) {
		d := startDaemon(t, hangServer(t), "--ready", "accept", "--hung-after", "1s")
		pid := d.serving()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Five long polls, held for the whole test.
		for range 5 {
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.addr+"/poll", strings.NewReader("x"))
				if resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req); err == nil {
					resp.Body.Close()
				}
			}()
		}
		load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 50, Slow: 2 * time.Second, SlowEvery: 250 * time.Millisecond})
		// 300 answers at 50 fast requests a second and 4 slow ones: 5 s,
		// five times --hung-after, 20 slow requests answered after 2 s each.
		if err := load.WaitAnswers(pid, 300, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		cancel()
		res := load.Wait()
		t.Logf("load: %v", res)
		if r := logrec.Find(d.records(), "event=worker.unresponsive"); r != nil {
			t.Errorf("a busy process was found hung: %s", r)
		}
		if p := d.serving(); p != pid {
			t.Errorf("serving pid %d, want %d still", p, pid)
		}
		d.stop()
	})
}
