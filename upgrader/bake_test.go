//go:build linux

package upgrader_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/upgrader"
)

// bakeRun is testdata/bakeserver under load: the file mode says what its
// next generation does.
type bakeRun struct {
	*server
	mode   string
	load   *loadcheck.Load
	cancel context.CancelFunc
	first  int
}

func startBake(t *testing.T, args ...string) *bakeRun {
	t.Helper()
	mode := filepath.Join(t.TempDir(), "mode")
	s := launchBin(t, bakeBin, nil, nil, nil, append([]string{"-mode", mode}, args...)...)
	b := &bakeRun{server: s, mode: mode, first: s.waitPid(0, 10*time.Second)}
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	t.Cleanup(cancel)
	// Issue 26's load: POSTs at 70 requests/s, open loop, half on fresh
	// connections.
	b.load = loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + s.addr, Rate: 70})
	if err := b.load.WaitAnswers(b.first, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bakeRun) next(mode string) {
	if err := os.WriteFile(b.mode, []byte(mode), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// rolledBack asks for an upgrade with Upgrade (SIGUSR1 in bakeserver) to a
// release in mode, and waits until it is rolled back: the new generation
// killed, Upgrade returning an *UpgradeError of kind ErrBake, and the first
// generation still answering. It returns the rollback's log record.
func (b *bakeRun) rolledBack(mode, why string) time.Time {
	b.t.Helper()
	b.next(mode)
	start := time.Now()
	if err := syscall.Kill(b.first, syscall.SIGUSR1); err != nil {
		b.t.Fatal(err)
	}
	r := b.waitRecord(15*time.Second, "event=upgrade.rolled_back", fmt.Sprintf("pid=%d", b.first))
	if !r.Match("why~" + why) {
		b.t.Errorf("rolled back for another reason than %q: %v", why, r)
	}
	b.t.Logf("%s rolled back %v after Upgrade was called: %s", mode, time.Since(start).Round(time.Millisecond), r.Get("why"))
	if u := b.waitRecord(5*time.Second, "event=test.upgrade", fmt.Sprintf("pid=%d", b.first)); !u.Match("upgrade_error=true", "bake=true", "rolled_back=1") {
		b.t.Errorf("Upgrade returned %v, want an *UpgradeError of kind ErrBake, and 1 upgrade rolled back in Metrics", u)
	}
	child := 0
	fmt.Sscan(r.Get("child_pid"), &child)
	if child == 0 || !waitGone(child, 5*time.Second) {
		b.t.Errorf("the rolled-back generation (pid %d) is still running", child)
	}
	if p := b.pid(); p != b.first {
		b.t.Errorf("the pid file says %d, want the first generation %d", p, b.first)
	}
	// It serves on: it answers more.
	if err := b.load.WaitAnswers(b.first, b.load.Answers(b.first)+20, 10*time.Second); err != nil {
		b.t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339Nano, r.Get("time"))
	if err != nil {
		b.t.Fatal(err)
	}
	return at
}

// upgradeGood upgrades to a release that serves, with SIGHUP, and waits until
// it answers.
func (b *bakeRun) upgradeGood() int {
	b.t.Helper()
	b.next("")
	old := b.signal(syscall.SIGHUP)
	pid := b.waitPid(old, 15*time.Second)
	if err := b.load.WaitAnswers(pid, 20, 10*time.Second); err != nil {
		b.t.Fatal(err)
	}
	b.waitExited(old, 15*time.Second)
	return pid
}

func (b *bakeRun) finish() *loadcheck.Result {
	b.cancel()
	res := b.load.Wait()
	b.stop()
	return res
}

// A release that calls Ready and never accepts (issue 26): the old
// generation rolls it back and serves on, no request fails, and the next
// upgrade, to a release that serves, goes through.
func TestBakeRollsBackNoAccept(t *testing.T) {
	spawns(t)
	if testing.Short() {
		t.Skip("real generations under load")
	}
	b := startBake(t)
	b.rolledBack("noaccept", "takes no connection")
	b.upgradeGood()
	res := b.finish()
	t.Logf("load: %v", res)
	if res.Failures() != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failures(), res.Sent, res.Samples)
	}
}

// A release that accepts and never answers is rolled back too, 2 s after its
// first requests; those it took are lost (it holds them when it is killed),
// nothing sent after the rollback.
func TestBakeRollsBackNoAnswer(t *testing.T) {
	spawns(t)
	if testing.Short() {
		t.Skip("real generations under load")
	}
	b := startBake(t)
	at := b.rolledBack("noanswer", "answers nothing")
	b.upgradeGood()
	res := b.finish()
	t.Logf("load: %v", res)
	for _, q := range res.Requests {
		if q.Class != "" && q.Start.After(at) {
			t.Errorf("a request sent %v after the rollback failed: %s", q.Start.Sub(at), q.Class)
		}
	}
}

// Without traffic the probe proves a release that serves, and catches one
// that does not accept.
func TestBakeIdle(t *testing.T) {
	spawns(t)
	if testing.Short() {
		t.Skip("real generations")
	}
	mode := filepath.Join(t.TempDir(), "mode")
	s := launchBin(t, bakeBin, nil, nil, nil, "-mode", mode)
	first := s.waitPid(0, 10*time.Second)
	if err := os.WriteFile(mode, []byte("noaccept"), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(first, syscall.SIGHUP)
	r := s.waitRecord(15*time.Second, "event=upgrade.rolled_back", fmt.Sprintf("pid=%d", first))
	if !r.Match("why~takes no connection") {
		t.Errorf("rolled back for another reason: %v", r)
	}
	if err := os.WriteFile(mode, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	syscall.Kill(first, syscall.SIGHUP)
	second := s.waitPid(first, 15*time.Second)
	t.Logf("an idle upgrade took %v", time.Since(start).Round(time.Millisecond))
	if r := s.waitRecord(5*time.Second, "event=bake.done", fmt.Sprintf("child_pid=%d", second)); !r.Match("proof~probe") {
		t.Errorf("proved by %v, want the probe", r)
	}
	s.waitExited(first, 15*time.Second)
	s.stop()
	if proc.Alive(second) {
		t.Errorf("pid %d still runs", second)
	}
}

// A release that exits during its bake (here when the old generation's probe
// reaches it, with no other traffic) is rolled back, and the old generation
// serves on.
func TestBakeRollsBackExit(t *testing.T) {
	spawns(t)
	if testing.Short() {
		t.Skip("real generations")
	}
	mode := filepath.Join(t.TempDir(), "mode")
	s := launchBin(t, bakeBin, nil, nil, nil, "-mode", mode)
	first := s.waitPid(0, 10*time.Second)
	if err := os.WriteFile(mode, []byte("exit"), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(first, syscall.SIGHUP)
	r := s.waitRecord(15*time.Second, "event=upgrade.rolled_back", fmt.Sprintf("pid=%d", first))
	if !r.Match("why~exited while baking", "why~exit status 3") {
		t.Errorf("rolled back for another reason: %v", r)
	}
	resp, err := http.Post("http://"+s.addr+"/", "text/plain", nil)
	if err != nil {
		t.Fatalf("the old generation does not serve: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("pid=%d\n", first); string(body) != want {
		t.Errorf("answered %q, want %q", body, want)
	}
	s.stop()
}

// A stop during a bake stops both: the old generation drains and exits 0,
// the new one, which never proved itself, is killed. On a Unix socket no
// accept queue is looked at, so the bake of a release that never accepts
// lasts: the stop comes within it.
func TestBakeStop(t *testing.T) {
	spawns(t)
	if testing.Short() {
		t.Skip("real generations")
	}
	dir := t.TempDir()
	mode, sock := filepath.Join(dir, "mode"), filepath.Join(dir, "app.sock")
	s := launchBin(t, bakeBin, nil, nil, nil, "-mode", mode, "-addr", "unix://"+sock)
	first := s.waitPid(0, 10*time.Second)
	if err := os.WriteFile(mode, []byte("noaccept"), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(first, syscall.SIGHUP)
	r := s.waitRecord(10*time.Second, "event=bake.started", fmt.Sprintf("pid=%d", first))
	child := 0
	fmt.Sscan(r.Get("child_pid"), &child)
	syscall.Kill(first, syscall.SIGTERM)
	s.stop()
	if child == 0 || !waitGone(child, 5*time.Second) {
		t.Errorf("the baking generation (pid %d) still runs after the stop", child)
	}
	if rec := logrec.Find(s.records(), "event=upgrade.rolled_back"); rec != nil {
		t.Errorf("a stop is not a rollback: %v", rec)
	}
}

// New refuses a bake window too short to see anything.
func TestBakeOptionRefused(t *testing.T) {
	_, err := upgrader.New(upgrader.Options{Bake: 100 * time.Millisecond})
	if err == nil || errors.Is(err, upgrader.ErrBake) {
		t.Fatalf("New with Bake 100ms: %v, want an error that names MinBake", err)
	}
	t.Log(err)
}

// A new generation whose Ready fails after it began serving (an OnReady
// hook fails) stops, and the old one serves on: the new one's stop must not
// hold back the listening sockets it shares with the old one (a socket
// filter that drops new connections stays on the socket, the old
// generation's too), nor remove their files.
func TestReadyFailsOldServesOn(t *testing.T) {
	spawns(t)
	b := startBake(t)
	b.next("readyfail")
	if err := syscall.Kill(b.first, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if u := b.waitRecord(15*time.Second, "event=test.upgrade", fmt.Sprintf("pid=%d", b.first)); !u.Match("upgrade_error=true") {
		t.Fatalf("Upgrade returned %v, want an *UpgradeError", u)
	}
	// New connections still reach the first generation.
	if err := b.load.WaitAnswers(b.first, b.load.Answers(b.first)+40, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b.upgradeGood()
	res := b.finish()
	t.Logf("load: %v", res)
	if res.Failures() != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failures(), res.Sent, res.Samples)
	}
}

// The same over a Unix socket: the failing generation's stop leaves the
// socket's file in place, and the first generation answers through it.
func TestReadyFailsUnixSocketKept(t *testing.T) {
	spawns(t)
	mode := filepath.Join(t.TempDir(), "mode")
	path := filepath.Join(t.TempDir(), "s.sock")
	s := launchBin(t, bakeBin, nil, nil, nil, "-mode", mode, "-addr", "unix://"+path)
	first := s.waitPid(0, 10*time.Second)
	defer s.stop()
	if err := os.WriteFile(mode, []byte("readyfail"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(first, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if u := s.waitRecord(15*time.Second, "event=test.upgrade", fmt.Sprintf("pid=%d", first)); !u.Match("upgrade_error=true") {
		t.Fatalf("Upgrade returned %v, want an *UpgradeError", u)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the socket's file after the failed upgrade: %v", err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := client.Post("http://x/", "text/plain", nil)
	if err != nil {
		t.Fatalf("a request through the socket's file: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("pid=%d", first); strings.TrimSpace(string(body)) != want {
		t.Fatalf("answered %q, want %q", body, want)
	}
}
