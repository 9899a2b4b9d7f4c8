//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// startAgain starts `handoff run` as d was started — the same address,
// control socket and program — with flags, as a supervisor (runit, a shell
// loop, a container's restart policy) does after handoff died, logging to
// a file of its own, and waits for its first generation to be ready.
func startAgain(t *testing.T, d *runningDaemon, flags ...string) *runningDaemon {
	t.Helper()
	return startAgainArgs(t, d, []string{d.prog}, flags...)
}

// startAgainArgs is startAgain with the program line given.
func startAgainArgs(t *testing.T, d *runningDaemon, program []string, flags ...string) *runningDaemon {
	t.Helper()
	n := &runningDaemon{t: t, dir: d.dir, addr: d.addr, control: d.control, prog: d.prog,
		logPath: d.logPath + ".again", exited: make(chan struct{})}
	args := append([]string{"run", "--log-format", "json", "--control", n.control, "--listen", "web=" + n.addr}, flags...)
	args = append(append(args, "--"), program...)
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n.cmd = exec.Command(handoffBin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.Dir = n.dir
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.waitErr = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(n.cleanup)
	n.waitRecord(15*time.Second, "event=generation.ready")
	return n
}

// keeperOf returns the pid of handoff's output keeper, or fails the test.
func keeperOf(t *testing.T, handoff int) int {
	t.Helper()
	for _, pid := range proc.Children(handoff) {
		if b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); strings.HasPrefix(string(b), "handoff-keeper\x00") {
			return pid
		}
	}
	t.Fatalf("handoff (pid %d) has no keeper among its children %v", handoff, proc.Children(handoff))
	return 0
}

// TestHandoffKilledRestarted is issue 26's third reproduction: `handoff run`
// killed with SIGKILL under an open-loop POST load, and started again 0.5 s
// later with the same flags, as a process supervisor does. The keeper holds
// the listening socket meanwhile, so that the connections that come wait in
// its accept queue; the new handoff takes the socket and its generation
// serves them. No request fails (before: 73 of 1,728 were refused).
func TestHandoffKilledRestarted(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 144})
	if err := load.WaitAnswers(0, 40, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	d.waitRecord(5*time.Second, "event=keeper.holding")
	// A supervisor's restart delay, not a wait for anything.
	<-time.After(time.Until(killed.Add(500 * time.Millisecond)))
	again := startAgain(t, d)
	again.waitRecord(5*time.Second, "event=hold.adopted", "addr="+d.addr)
	d.waitRecord(5*time.Second, "event=keeper.handed_over")
	gen := again.serving()
	if err := load.WaitAnswers(gen, 100, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	res := load.Wait()
	gap := 0 // requests started between the kill and the new generation's first answer
	for _, q := range res.Requests {
		if q.Start.After(killed) && q.Start.Before(killed.Add(500*time.Millisecond)) {
			gap++
		}
	}
	t.Logf("load: %v; %d requests started in the 0.5 s before handoff started again", res, gap)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if gap == 0 {
		t.Error("no request was sent while no handoff ran")
	}
	// The old keeper exits once the old generation's output has ended.
	keeperGone := time.Now().Add(10 * time.Second)
	for len(proc.Descendants(os.Getpid())) > len(proc.Descendants(again.cmd.Process.Pid))+1 && time.Now().Before(keeperGone) {
		time.Sleep(10 * time.Millisecond)
	}
	if n, m := len(proc.Descendants(os.Getpid())), len(proc.Descendants(again.cmd.Process.Pid))+1; n > m {
		t.Errorf("%d processes besides the new handoff's %d: the old keeper did not exit", n-m, m)
	}
	again.stop()
}

// TestHandoffKilledHoldExpires: `handoff run --hold 1s` killed with SIGKILL
// and not started again. A connection that comes during the hold waits, and
// is closed when it ends; from then on connections are refused at once.
// Nothing waits past the hold and a margin.
func TestHandoffKilledHoldExpires(t *testing.T) {
	spawns(t)
	const hold, margin = time.Second, 2 * time.Second
	d := startDaemon(t, nil, "--hold", hold.String())
	gen := d.serving()
	killed := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	d.waitRecord(5*time.Second, "event=keeper.holding")
	for proc.Alive(gen) && time.Since(killed) < hold {
		time.Sleep(5 * time.Millisecond)
	}
	if proc.Alive(gen) {
		t.Fatalf("the generation (pid %d) still runs %v after handoff was killed", gen, hold)
	}
	// Its generation has exited: only the keeper's copy listens.
	client := &http.Client{Timeout: 30 * time.Second}
	resp, reqErr := client.Post("http://"+d.addr+"/", "text/plain", nil)
	if reqErr == nil {
		resp.Body.Close()
		t.Errorf("a request during the hold, with no generation, was answered: %s", resp.Status)
	}
	failed := time.Since(killed)
	if failed > hold+margin {
		t.Errorf("a request during the hold failed only %v after the kill (hold %v): %v", failed, hold, reqErr)
	}
	d.waitRecord(margin, "event=keeper.hold_expired")
	c, err := net.DialTimeout("tcp", d.addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepts a connection after the hold", d.addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a connection after the hold: %v, want ECONNREFUSED", err)
	}
	if after := time.Since(killed); after > hold+margin {
		t.Errorf("refused %v after the kill, past the hold %v and %v", after, hold, margin)
	}
	t.Logf("a request during the hold failed %v after the kill: %v; a connection after it was refused %v after the kill",
		failed.Round(time.Millisecond), reqErr, time.Since(killed).Round(time.Millisecond))
}

// TestKeeperKilled kills the output keeper: handoff starts another at once
// and gives it the generation's output pipes and the socket; then handoff is
// killed, the new keeper holds the socket, and the generation's drain line
// still reaches handoff's output (before: no new keeper, and the
// generation's write failed).
func TestKeeperKilled(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil)
	gen := d.serving()
	keeper := keeperOf(t, d.cmd.Process.Pid)
	if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.waitRecord(5*time.Second, "event=keeper.gone", "keeper_pid="+strconv.Itoa(keeper))
	d.waitRecord(5*time.Second, "event=keeper.restarted")
	again := keeperOf(t, d.cmd.Process.Pid)
	if again == keeper {
		t.Fatalf("the keeper's pid is still %d", keeper)
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	d.waitRecord(5*time.Second, "event=keeper.holding", "keeper_pid="+strconv.Itoa(again), "addrs~"+d.addr)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log(), "app: pid="+strconv.Itoa(gen)+" drained") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(d.log(), "app: pid="+strconv.Itoa(gen)+" drained") {
		t.Errorf("the generation's drain line did not reach handoff's output through the new keeper:\n%s", d.log())
	}
}

// TestHoldMismatch starts handoff again with other --listen flags than the
// killed one had: the address both give is taken from the keeper, the one
// only the new handoff gives is bound afresh, and the one only the killed
// handoff had is closed, saying so, and refuses connections.
func TestHoldMismatch(t *testing.T) {
	spawns(t)
	dropped, added := proc.FreeAddr(t), proc.FreeAddr(t)
	d := startDaemon(t, nil, "--listen", "old="+dropped)
	gen := d.serving()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	d.waitRecord(5*time.Second, "event=keeper.holding")
	again := startAgain(t, d, "--listen", "new="+added)
	again.waitRecord(5*time.Second, "event=hold.adopted", "addr="+d.addr)
	again.waitRecord(5*time.Second, "event=hold.unused", "addrs~"+dropped)
	if bound := `"addr":"` + added + `","local":"` + added + `","source":"bound"`; !strings.Contains(again.log(), bound) {
		t.Errorf("no line says %s was bound afresh:\n%s", added, again.log())
	}
	d.waitRecord(5*time.Second, "event=keeper.handed_over")
	for _, a := range []string{d.addr, added} {
		resp, err := http.Post("http://"+a+"/", "text/plain", nil)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		resp.Body.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); proc.Alive(gen) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", dropped, time.Second); err == nil {
		c.Close()
		t.Errorf("%s, which no --listen asks for any more, still accepts connections", dropped)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: %v, want ECONNREFUSED", dropped, err)
	}
	again.stop()
}

// TestHoldUnixAndUDP: the keeper holds Unix and UDP sockets too. During the
// hold, with no generation left, a connection to the Unix socket waits in
// its queue instead of being refused; handoff started again takes both.
func TestHoldUnixAndUDP(t *testing.T) {
	spawns(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	dir := t.TempDir()
	sock, udp := filepath.Join(dir, "app.sock"), proc.FreeAddr(t)
	flags := []string{"--ready", "delay:10ms", "--listen", "api=unix://" + sock, "--listen", "dns=udp://" + udp}
	d := startDaemon(t, []string{sleep, "600"}, flags...)
	gen := d.serving()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	d.waitRecord(5*time.Second, "event=keeper.holding")
	for deadline := time.Now().Add(10 * time.Second); proc.Alive(gen) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		t.Fatalf("%s during the hold: %v", sock, err)
	}
	c.Close()
	again := startAgainArgs(t, d, []string{sleep, "600"}, flags...)
	for _, a := range []string{"unix://" + sock, "udp://" + udp} {
		again.waitRecord(5*time.Second, "event=hold.adopted", "held_as~"+strings.TrimPrefix(strings.TrimPrefix(a, "unix://"), "udp://"))
	}
	d.waitRecord(5*time.Second, "event=keeper.handed_over")
	again.stop()
}

// TestKeeperCrashLoop kills each new keeper as soon as it starts: the first
// is replaced at once, the next ones after a growing delay, and handoff says
// once that the keeper keeps exiting.
func TestKeeperCrashLoop(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil)
	var delays []string
	for i := 1; i <= 4; i++ {
		keeper := keeperOf(t, d.cmd.Process.Pid)
		if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		gone := d.waitRecord(5*time.Second, "event=keeper.gone", "keeper_pid="+strconv.Itoa(keeper))
		delays = append(delays, gone.Get("delay"))
		d.waitRecord(5*time.Second, "event=keeper.restarted", "restarts="+strconv.Itoa(i))
	}
	if want := []string{"0s", "100ms", "200ms", "400ms"}; strings.Join(delays, " ") != strings.Join(want, " ") {
		t.Errorf("delays before each new keeper: %v, want %v", delays, want)
	}
	if n := strings.Count(d.log(), `"event":"keeper.crash_loop"`); n != 1 {
		t.Errorf("%d keeper.crash_loop lines, want 1:\n%s", n, d.log())
	}
	d.stop()
}

// TestKeeperStoppedDuringHold: a stop signal to the keeper during the hold —
// systemd's control-group kill after handoff died — ends the hold at once:
// the sockets are closed and connections refused, and nothing waits for the
// rest of the hold.
func TestKeeperStoppedDuringHold(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil, "--hold", "1m")
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	rec := d.waitRecord(5*time.Second, "event=keeper.holding")
	keeper, err := strconv.Atoi(rec.Get("keeper_pid"))
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := syscall.Kill(keeper, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.waitRecord(5*time.Second, "event=keeper.hold_stopped", "signal=terminated")
	for deadline := time.Now().Add(5 * time.Second); proc.Alive(keeper) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if proc.Alive(keeper) {
		t.Errorf("the keeper (pid %d) still runs 5 s after SIGTERM", keeper)
	}
	if c, err := net.DialTimeout("tcp", d.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s accepts connections after the keeper was stopped", d.addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: %v, want ECONNREFUSED", d.addr, err)
	}
	t.Logf("keeper gone %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
}

// TestHeldSocketsUpgradeOn: sockets a handoff took from a keeper pass on
// like its own — an upgrade of handoff itself (SIGUSR2) under load hands
// them to the next handoff, which serves with no request failed.
func TestHeldSocketsUpgradeOn(t *testing.T) {
	spawns(t)
	d := startDaemon(t, nil)
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	d.waitRecord(5*time.Second, "event=keeper.holding")
	again := startAgain(t, d)
	again.waitRecord(5*time.Second, "event=hold.adopted", "addr="+d.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 100})
	if err := load.WaitAnswers(0, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	old := again.cmd.Process.Pid
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := again.waitExit(20 * time.Second); err != nil {
		t.Errorf("the handoff that took the sockets, after SIGUSR2: %v", err)
	}
	st := again.status()
	if st.PID == old || len(st.Generations) != 1 {
		t.Fatalf("after SIGUSR2: %+v (old handoff %d)", st, old)
	}
	if err := load.WaitAnswers(st.Generations[0].PID, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	res := load.Wait()
	t.Logf("load: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	_ = syscall.Kill(st.PID, syscall.SIGTERM)
	for deadline := time.Now().Add(20 * time.Second); proc.Alive(st.PID) && time.Now().Before(deadline); {
		proc.ReapAll()
		time.Sleep(20 * time.Millisecond)
	}
}
