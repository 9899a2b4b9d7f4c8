//go:build linux

package upgrader_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
)

// fresh is a client that opens a connection per request, so that a request
// goes to the generation that accepts now.
var fresh = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// startJobs starts n background jobs of d on the server at addr.
func startJobs(t *testing.T, addr string, first, n int, d time.Duration) {
	t.Helper()
	for i := first; i < first+n; i++ {
		resp, err := fresh.Post(fmt.Sprintf("http://%s/job?id=%d&d=%s", addr, i, d), "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("job %d: %s %s", i, resp.Status, b)
		}
	}
}

// records returns the -record file's lines that contain every one of words.
func records(path string, words ...string) []string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		ok := l != ""
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// TestJobsKeptThroughHandoverAndStop: five 3 s background jobs, then SIGHUP:
// all five finish in the old generation while the new one serves, and the
// old one exits right after; five 2 s jobs in the new generation, then
// SIGTERM: all five finish before it exits.
func TestJobsKeptThroughHandoverAndStop(t *testing.T) {
	spawns(t)
	rec := filepath.Join(t.TempDir(), "record")
	s := launchBin(t, hijackBin, nil, nil, nil, "-record", rec, "-drain-timeout", "10s")
	first := s.waitPid(0, 10*time.Second)
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()

	startJobs(t, s.addr, 1, 5, 3*time.Second)
	started := time.Now()
	s.signal(syscall.SIGHUP)
	second := s.waitPid(first, 10*time.Second)
	resp, err := fresh.Post("http://"+s.addr+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "pid="+strconv.Itoa(second)) {
		t.Errorf("after the handover %q answered, want the new generation %d", b, second)
	}
	select {
	case err := <-exited:
		took := time.Since(started)
		t.Logf("old generation exited %v after its jobs started", took.Round(time.Millisecond))
		if err != nil || took < 2900*time.Millisecond || took > 6*time.Second {
			t.Errorf("old generation exited %v after its 3 s jobs started (%v); want once they are done", took, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("old generation still running:\n%s", s.log())
	}
	if done := records(rec, "done", "pid="+strconv.Itoa(first)); len(done) != 5 {
		t.Errorf("%d of 5 jobs finished in the old generation: %q\n%s", len(done), done, s.log())
	}
	if line := logrec.Find(s.records(), "event=drain.done", "pid="+strconv.Itoa(first)); !line.Match("jobs=5") {
		t.Errorf("the old generation's drain line does not count its 5 jobs: %q", line)
	}

	startJobs(t, s.addr, 6, 5, 2*time.Second)
	started = time.Now()
	_ = syscall.Kill(second, syscall.SIGTERM)
	if !waitGone(second, 15*time.Second) {
		t.Fatalf("new generation still running after SIGTERM:\n%s", s.log())
	}
	t.Logf("new generation exited %v after SIGTERM", time.Since(started).Round(time.Millisecond))
	if done := records(rec, "done", "pid="+strconv.Itoa(second)); len(done) != 5 {
		t.Errorf("%d of 5 jobs finished before the stop: %q\n%s", len(done), done, s.log())
	}
}

// TestDeadlineCancelsJobsAndRequests: a 30 s job and a request that waits
// for its context, then SIGTERM with a 2 s drain timeout: the job's and the
// request's contexts are cancelled at the deadline, and the process exits
// promptly after it.
func TestDeadlineCancelsJobsAndRequests(t *testing.T) {
	spawns(t)
	rec := filepath.Join(t.TempDir(), "record")
	s := launchBin(t, hijackBin, nil, nil, nil, "-record", rec, "-drain-timeout", "2s")
	first := s.waitPid(0, 10*time.Second)
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	startJobs(t, s.addr, 1, 1, 30*time.Second)
	go func() {
		if resp, err := fresh.Get("http://" + s.addr + "/wait"); err == nil {
			resp.Body.Close()
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); len(records(rec, "request waiting")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached its handler")
		}
	}
	started := time.Now()
	s.signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		took := time.Since(started)
		t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
		if err != nil || took < 2*time.Second || took > 4*time.Second {
			t.Errorf("exited %v after SIGTERM with a 2 s drain timeout (%v); want promptly after the deadline", took, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15 s after SIGTERM:\n%s", s.log())
	}
	pid := "pid=" + strconv.Itoa(first)
	if len(records(rec, "job 1 cancelled", pid)) != 1 || len(records(rec, "request cancelled", pid)) != 1 {
		b, _ := os.ReadFile(rec)
		t.Errorf("the job's and the request's contexts were not both cancelled: %q", b)
	}
	// The request returned once its context was cancelled: it was not cut.
	if line := logrec.Find(s.records(), "event=drain.cut"); !line.Match("jobs_cancelled=1", "cut=0") {
		t.Errorf("drain line %q; want cut=0 (the handler returned when cancelled) and jobs_cancelled=1", line)
	}
}
