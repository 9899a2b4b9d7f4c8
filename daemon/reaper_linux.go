package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reapSweep is how often the reaper looks for zombies besides on SIGCHLD,
// in case signals were coalesced or missed.
const reapSweep = time.Second

// reaper reaps the children handoff did not start: when handoff is PID 1 of
// a container (or a child subreaper), every orphan of the namespace becomes
// its child, and a zombie nobody waits for stays forever.
//
// It must never take the exit status of a generation from the os/exec Wait
// that waits for it, so it does not call wait4(-1): it lists its zombie
// children in /proc and reaps each by pid, skipping the pids of processes
// handoff started (own). Starting a process and recording its pid happen
// under mu, as does the sweep, so the sweep cannot see a child of handoff's
// own before it is recorded.
type reaper struct {
	log *slog.Logger
	pid int

	mu     sync.Mutex
	own    map[int]bool
	paused int // while > 0, nothing is reaped (a self-upgrade's child)
	reaped int
}

// newReaper returns a reaper that runs if handoff is PID 1 or a child
// subreaper, or nil if orphans do not come to handoff (then nothing is to be
// done: start and done may be called on a nil *reaper).
func newReaper(log *slog.Logger) *reaper {
	pid := os.Getpid()
	var sub int32
	_ = unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&sub)), 0, 0, 0)
	if pid != 1 && sub == 0 {
		return nil
	}
	r := &reaper{log: log, pid: pid, own: map[int]bool{}}
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
	log.Info("reaping orphans", "reason", map[bool]string{true: "handoff is PID 1", false: "handoff is a child subreaper"}[pid == 1])
	return r
}

// start runs startFn, which starts a child of handoff's own, and records the
// pid it returns so that the child is left to whoever waits for it.
func (r *reaper) start(startFn func() (int, error)) error {
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

// done forgets pid once its own waiter has reaped it.
func (r *reaper) done(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.own, pid)
	r.mu.Unlock()
}

// pause stops reaping until resume: while a child handoff cannot record
// (the new handoff of a self-upgrade, which tableflip starts and waits for)
// runs.
func (r *reaper) pause() {
	if r != nil {
		r.mu.Lock()
		r.paused++
		r.mu.Unlock()
	}
}

func (r *reaper) resume() {
	if r != nil {
		r.mu.Lock()
		r.paused--
		r.mu.Unlock()
		r.sweep()
	}
}

// sweep reaps every zombie child of handoff that is not its own.
func (r *reaper) sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused > 0 {
		return
	}
	n := 0
	for _, pid := range zombieChildren(r.pid) {
		if r.own[pid] {
			continue
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err == nil && got == pid {
			n++
		} else if err != nil && !errors.Is(err, unix.ECHILD) {
			r.log.Warn("reaping an orphan failed", "orphan_pid", pid, "err", os.NewSyscallError("wait4", err))
		}
	}
	if n > 0 {
		r.reaped += n
		r.log.Debug("reaped orphans", "n", n, "total", r.reaped)
	}
}

// zombieChildren lists the children of pid that have exited and wait to be
// reaped, from /proc/*/stat.
func zombieChildren(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		// ") Z 1 …": the state, then the parent's pid.
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		state := f[0]
		ppid, _ := strconv.Atoi(f[1])
		if state == "Z" && ppid == pid {
			out = append(out, p)
		}
	}
	return out
}
