package upgrader

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/linetail"
	"github.com/handoff-dev/handoff/systemd"
)

// attempt runs one upgrade: it starts the next generation and waits until it
// is ready or has failed. Only the run goroutine calls it, one at a time.
func (u *Upgrader) attempt() attemptResult {
	start := time.Now()
	if _, err := systemd.Reloading(u.status("starting the next generation")); err != nil {
		u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
	}
	stopExtending := u.extendWhileUpgrading()
	res := u.startNext()
	stopExtending()
	if res.err != nil {
		var ue *UpgradeError
		rolledBack := errors.As(res.err, &ue) && ue.Kind == ErrBake
		u.book.do(func(c *counters) {
			if rolledBack {
				c.RolledBack++
			} else {
				c.Failed++
			}
		})
		if rolledBack {
			u.log.Warn("new generation rolled back: it did not prove it serves; still serving", "event", "upgrade.rolled_back",
				"child_pid", res.pid, "why", ue.Cause.Error(), "after_ms", time.Since(start).Milliseconds())
		} else {
			u.log.Error("upgrade failed; still serving", "event", "upgrade.failed", "err", res.err, "after_ms", time.Since(start).Milliseconds())
		}
		if _, err := systemd.Ready(u.status("serving; " + strings.TrimPrefix(res.err.Error(), "upgrader: "))); err != nil {
			u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
		}
		return res
	}
	u.log.Info("new generation ready", "event", "upgrade.ready", "child_pid", res.pid, "ready_ms", time.Since(start).Milliseconds())
	u.book.do(func(c *counters) {
		c.Ready++
		c.UpgradeSec.Observe(time.Since(start).Seconds())
	})
	// The new generation counts on from here.
	if err := res.child.send("counters %s", u.book.encode()); err != nil {
		u.log.Warn("cannot pass the metrics' counters to the new generation", "event", "metrics.pass_failed", "child_pid", res.pid, "err", err)
	}
	status := fmt.Sprintf("generation %d (pid %d) ready", u.gen+1, res.pid)
	var err error
	if res.pid > 0 {
		// From this datagram on, the new generation is systemd's main
		// process: no watchdog ping of ours may follow it.
		u.mainMu.Lock()
		u.notMain = true
		_, err = systemd.ReadyMainPID(res.pid, status)
		u.mainMu.Unlock()
	} else {
		_, err = systemd.Ready(status)
	}
	if err != nil {
		u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
	}
	if _, err := systemd.Barrier(5 * time.Second); err != nil {
		u.log.Warn("sd_notify barrier failed", "event", "notify.failed", "err", err)
	}
	if err := res.child.send("main"); err != nil {
		u.log.Warn("cannot tell the new generation it is the main process", "event", "upgrade.main_failed", "child_pid", res.pid, "err", err)
	}
	return res
}

// extendWhileUpgrading sends EXTEND_TIMEOUT_USEC= now and every lifecycle.ExtendEvery
// until the function it returns is called, which waits for the last one.
func (u *Upgrader) extendWhileUpgrading() (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(lifecycle.ExtendEvery)
		defer t.Stop()
		for {
			if _, err := systemd.ExtendTimeout(lifecycle.ExtendBy); err != nil {
				u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// startNext forks and execs the next generation through tableflip, with a
// control channel and, from its New until its Ready, its stderr through a
// pipe whose last lines explain a failure.
func (u *Upgrader) startNext() attemptResult {
	checked, err := u.checkNext()
	if err != nil {
		return attemptResult{err: &UpgradeError{Kind: ErrStart, Cause: err}}
	}
	defer checked()
	parent, childEnd, err := newCtlPair()
	if err != nil {
		return attemptResult{err: &UpgradeError{Kind: ErrStart, Cause: err}}
	}
	// The child's stderr from its New to its Ready: a pipe of ours, which
	// the child puts on its fd 2 (see adopt), so that a failure can be
	// reported with its last lines. It travels with the init message, which
	// the child reads as soon as it starts (the socket buffers it), and so
	// has no copy anywhere else: once the child has put its stderr back, or
	// died, the pipe ends. What a release prints before New goes to the
	// stderr tableflip gives it as fd 2: this process's own.
	pr, pw, err := os.Pipe()
	if err != nil {
		parent.close()
		childEnd.Close()
		return attemptResult{err: &UpgradeError{Kind: ErrStart, Cause: err}}
	}
	// "bake MS" goes in the same datagram as init, so that the child finds
	// it at once, and a release that knows nothing of it skips the line.
	err = parent.sendWithFile(pw, "init %d %d\nbake %d", u.gen+1, u.watchdog.Microseconds(), u.opts.Bake.Milliseconds())
	pw.Close()
	if err != nil {
		parent.close()
		childEnd.Close()
		pr.Close()
		return attemptResult{err: &UpgradeError{Kind: ErrStart, Cause: fmt.Errorf("control channel: %w", err)}}
	}
	var ctlIno uint64
	if fi, err := childEnd.Stat(); err == nil {
		ctlIno = inode(fi)
	}
	err = u.core.AddFile(ctlName, childEnd)
	childEnd.Close()
	if err != nil {
		parent.close()
		pr.Close()
		return attemptResult{err: &UpgradeError{Kind: ErrStart, Cause: fmt.Errorf("passing the control channel: %w", err)}}
	}
	u.passHandoverSocket()
	tl := linetail.New(pr, os.Stderr, 5)
	// The child's lines: "started PID", then "baking COUNTS" (a release
	// that bakes), "ready PID", and its counts while it bakes.
	done := make(chan struct{})
	defer close(done)
	lines := make(chan []string, 16)
	go func() {
		defer close(lines)
		for {
			f, err := parent.recv(time.Time{})
			if err != nil {
				return
			}
			select {
			case lines <- f:
			case <-done:
				return
			}
		}
	}()
	coreC := make(chan error, 1)
	go func() { coreC <- u.core.Upgrade() }()
	// With a bake, tableflip's own timeout covers the bake too (see
	// newCore): UpgradeTimeout is kept here, once the child's pid is known.
	var readyTimeout <-chan time.Time
	if u.opts.Bake > 0 {
		t := time.NewTimer(u.opts.UpgradeTimeout)
		defer t.Stop()
		readyTimeout = t.C
	}
	var (
		pid, startedPid int
		baking, counts  bool
		timedOut        bool
		bakeErr         error
		paused          bool // this generation's Drainers are paused
	)
wait:
	for {
		select {
		case f, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			if len(f) != 2 {
				continue
			}
			n, _ := strconv.Atoi(f[1])
			switch f[0] {
			case "started":
				startedPid = n
				u.log.Info("new generation started", "event", "upgrade.started", "child_pid", n)
			case "baking":
				baking, counts = true, n == 1
			case "ready":
				pid, readyTimeout = n, nil
				if !baking || u.opts.Bake <= 0 {
					continue // tableflip tells the end
				}
				if len(u.drainerList()) == 0 {
					u.log.Info("bake skipped: this generation serves without a Drainer, so it cannot step aside", "event", "bake.skipped", "child_pid", pid)
					_ = parent.send("baked")
					continue
				}
				bakeStart := time.Now()
				paused = true
				proof, fail, cerr, consumed := u.bake(pid, counts, lines, coreC)
				if consumed && cerr != nil && errors.Is(cerr, ErrStopped) {
					err = cerr // stopping: tableflip killed it
					break wait
				}
				if fail == nil {
					u.log.Info("the new generation proved it serves", "event", "bake.done", "child_pid", pid, "proof", proof, "bake_ms", time.Since(bakeStart).Milliseconds())
					if consumed {
						err = cerr
						break wait
					}
					_ = parent.send("baked")
					continue
				}
				// Roll back: kill it, take the connections that wait, and
				// let tableflip see a child that exited before it was ready.
				_ = kill(pid, syscall.SIGKILL)
				u.resume()
				paused = false
				bakeErr = fail
				if consumed {
					err = cerr
					break wait
				}
			}
		case err = <-coreC:
			break wait
		case <-readyTimeout:
			readyTimeout = nil
			if startedPid == 0 {
				// It never reached upgrader.New to say its pid.
				startedPid = childHolding(ctlIno)
			}
			if startedPid > 0 {
				timedOut = true
				_ = kill(startedPid, syscall.SIGKILL)
			}
		}
	}
	// The child has put its stderr back before it said it was ready, or it
	// is dead: the pipe ends now. One that died before it read the init
	// message leaves the write end in flight in the channel, which tableflip
	// keeps until the next upgrade: its pipe is read for a moment more.
	select {
	case <-tl.Done():
	case <-time.After(100 * time.Millisecond):
		_ = pr.SetReadDeadline(time.Now())
		<-tl.Done()
	}

	if paused && err != nil {
		u.resume() // it died after it was baked
	}
	if bakeErr != nil {
		parent.close()
		runtime.GC() // as below
		return attemptResult{err: &UpgradeError{Kind: ErrBake, Cause: bakeErr}, pid: pid}
	}
	if err != nil && timedOut {
		cause := err
		var ue *UpgradeError
		if errors.As(err, &ue) && ue.Cause != nil {
			cause = ue.Cause // what tableflip said of the killed child
		}
		err = &UpgradeError{Kind: ErrTimeout, Cause: fmt.Errorf("pid %d not ready within %v, killed: %w", startedPid, u.opts.UpgradeTimeout, cause)}
	}
	if err != nil {
		parent.close()
		// tableflip drops three descriptors of each attempt without closing
		// them — the two pipe ends it gave the child, and the copy of the
		// control channel that the next AddFile replaces — and leaves them
		// to their finalizers: collect now, or a process that fails
		// upgrades while allocating little keeps three per failure.
		runtime.GC()
		ue := &UpgradeError{Kind: ErrExited, Cause: err}
		errors.As(err, &ue) // the core says which kind of failure it was
		ue.Stderr = tl.Last()
		return attemptResult{err: ue}
	}
	if err == nil && pid == 0 {
		// tableflip may tell the end before the line "ready PID" is read.
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
	pidWait:
		for lines != nil {
			select {
			case f, ok := <-lines:
				if !ok {
					break pidWait
				}
				if len(f) == 2 && f[0] == "ready" {
					pid, _ = strconv.Atoi(f[1])
					break pidWait
				}
			case <-t.C:
				break pidWait
			}
		}
	}
	if pid == 0 {
		u.log.Warn("the new generation did not say its pid; systemd keeps the old MAINPID", "event", "upgrade.no_pid")
	}
	return attemptResult{pid: pid, child: parent}
}
