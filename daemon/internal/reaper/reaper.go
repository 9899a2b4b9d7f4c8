//go:build linux

package reaper

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"golang.org/x/sys/unix"
)

// reapSweep is how often the reaper looks for zombies besides on SIGCHLD,
// in case signals were coalesced or missed.
const reapSweep = time.Second

// Reaper reaps the children handoff did not start: when handoff is PID 1 of
// a container (or a child subreaper), every orphan of the namespace becomes
// its child, and a zombie nobody waits for stays forever.
//
// It must never take the exit status of a generation from the os/exec Wait
// that waits for it, so it does not call wait4(-1): it lists its zombie
// children in /proc and reaps each by pid, skipping the pids of processes
// handoff started (own). Starting a process and recording its pid happen
// under mu, as does the sweep, so the sweep cannot see a child of handoff's
// own before it is recorded.
type Reaper struct {
	log *slog.Logger
	pid int

	mu     sync.Mutex
	own    map[int]bool
	paused int // while > 0, nothing is reaped (a self-upgrade's child)
	reaped int
}

// New makes handoff a child subreaper, so that every process a
// generation starts stays in handoff's care when its parent exits — a
// program that daemonizes cannot escape — and returns a reaper for the
// orphans that come, or nil if they cannot come to handoff (then nothing is
// to be done: its methods may be called on a nil *Reaper).
func New(log *slog.Logger) *Reaper {
	pid := os.Getpid()
	if pid != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			log.Warn("cannot become a child subreaper: a program that daemonizes will escape handoff", "event", "reaper.failed", "err", os.NewSyscallError("prctl PR_SET_CHILD_SUBREAPER", err))
		}
	}
	var sub int32
	_ = unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&sub)), 0, 0, 0)
	if pid != 1 && sub == 0 {
		return nil
	}
	r := &Reaper{log: log, pid: pid, own: map[int]bool{}}
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		t := time.NewTicker(reapSweep)
		defer t.Stop()
		for {
			select {
			case <-chld:
			case <-t.C:
			}
			r.sweep()
		}
	}()
	if pid == 1 {
		log.Info("reaping orphans", "event", "reaper.started", "reason", "handoff is PID 1")
	}
	return r
}

// Start runs startFn, which starts a child of handoff's own, and records the
// pid it returns so that the child is left to whoever waits for it.
func (r *Reaper) Start(startFn func() (int, error)) error {
	if r == nil {
		_, err := startFn()
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := startFn()
	if err == nil {
		r.own[pid] = true
	}
	return err
}

// Done forgets pid once its own waiter has reaped it.
func (r *Reaper) Done(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.own, pid)
	r.mu.Unlock()
}

// Pause stops reaping until Resume: while a child handoff cannot record
// (the new handoff of a self-upgrade, which tableflip starts and waits for)
// runs.
func (r *Reaper) Pause() {
	if r != nil {
		r.mu.Lock()
		r.paused++
		r.mu.Unlock()
	}
}

// Resume undoes one Pause: reaping starts again once every Pause is undone.
func (r *Reaper) Resume() {
	if r != nil {
		r.mu.Lock()
		r.paused--
		r.mu.Unlock()
		r.sweep()
	}
}

// sweep reaps every zombie child of handoff that is not its own.
func (r *Reaper) sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused > 0 {
		return
	}
	n := 0
	for _, pid := range procfs.ZombieChildren(r.pid) {
		if r.own[pid] {
			continue
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err == nil && got == pid {
			n++
		} else if err != nil && !errors.Is(err, unix.ECHILD) {
			r.log.Warn("reaping an orphan failed", "event", "reaper.reap_failed", "orphan_pid", pid, "err", os.NewSyscallError("wait4", err))
		}
	}
	if n > 0 {
		r.reaped += n
		r.log.Debug("reaped orphans", "event", "reaper.reaped", "n", n, "total", r.reaped)
	}
}

// Stray is a live child of handoff that it did not start: a process a
// generation left behind, re-parented to handoff (a child subreaper) when its
// parent exited.
type Stray struct {
	PID  int
	PGID int
	Cmd  string // its command line, at most 80 bytes
}

// Strays lists handoff's live children that it did not start and whose
// process group is not that of a generation still running (a generation
// leads a process group of its own): what the generations that have exited
// left behind — the copy of a program that daemonized (its own session), or
// a helper whose parent died.
func (r *Reaper) Strays() []Stray {
	if r == nil {
		return nil
	}
	// Held for the whole look, as the sweep does: a generation started
	// meanwhile is a child before it is recorded as handoff's own, and
	// would be taken for a stray.
	r.mu.Lock()
	defer r.mu.Unlock()
	// A new handoff (SIGUSR2) is started in handoff's own process group,
	// and the generations each in a group of their own.
	self := unix.Getpgrp()
	var out []Stray
	procfs.ForEachChild(func(pid int, state string, ppid, pgid int) {
		if ppid != r.pid || state == "Z" || r.own[pid] || r.own[pgid] || pgid == self {
			return
		}
		out = append(out, Stray{PID: pid, PGID: pgid, Cmd: procfs.Cmdline(pid)})
	})
	return out
}
