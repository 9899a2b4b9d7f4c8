//go:build linux

package upgrader_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestParentKilledDuringHandover kills the old generation with SIGKILL while
// the new one is between New and Ready, writing to stderr (a pipe to the old
// one until Ready): the new one serves on as the main process, writes its pid
// file and says why, loses no request that started after the kill, and can
// itself be upgraded.
func TestParentKilledDuringHandover(t *testing.T) {
	spawns(t)
	slow := filepath.Join(t.TempDir(), "slow")
	s := launchBin(t, slowReadyBin, nil, nil, nil, "-slow", slow)
	old := s.waitPid(0, 10*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + s.addr, Rate: 200})

	if err := os.WriteFile(slow, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.signal(syscall.SIGHUP)
	s.waitRecord(10*time.Second, "starting slowly", "step=5")
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = s.cmd.Wait()
	next := s.waitPid(old, 10*time.Second)
	s.waitRecord(5*time.Second, "event=orphaned", "pid="+itoa(next))
	s.waitRecord(5*time.Second, "starting slowly", "step=29") // it wrote on after its parent died
	// load on the new generation alone
	if err := load.WaitAnswers(next, load.Answers(next)+30, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// It can hand over in turn.
	os.Remove(slow)
	if err := syscall.Kill(next, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	third := s.waitPid(next, 10*time.Second)
	if err := load.WaitAnswers(third, 30, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	r := load.Wait()
	t.Logf("%v", r)
	after := 0
	for _, q := range r.Requests {
		if q.Class != "" && q.Start.After(killed.Add(100*time.Millisecond)) {
			after++
		}
	}
	if after > 0 {
		t.Errorf("%d requests that started after the kill failed: %v", after, r.Samples)
	}
	if r.Pids[third] == 0 {
		t.Errorf("the third generation (pid %d) answered nothing: %v", third, r.Pids)
	}
	if !proc.Alive(third) {
		t.Fatalf("the third generation is gone:\n%s", s.log())
	}
	_ = syscall.Kill(third, syscall.SIGTERM)
	if !waitGone(third, 15*time.Second) || !waitGone(next, 15*time.Second) {
		t.Errorf("generations left after the stop:\n%s", s.log())
	}
}
