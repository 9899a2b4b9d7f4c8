//go:build linux

package supervisor

import (
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"golang.org/x/sys/unix"
)

// What the generations leave behind. handoff is a child subreaper (see
// reaper.New): a process whose parent in a generation's tree exits — the
// copy of a program that daemonized, a helper whose parent died — becomes
// handoff's child, and outlives no generation unmanaged. When a generation
// exits, what it left is stopped as a draining generation is: the stop
// signal to its process group, SIGKILL after --drain-timeout. A generation
// that exits 0 before it is ready and leaves processes behind daemonized,
// and its failure says so. Whatever is left when handoff exits is stopped
// first.

// strays lists the reaper's strays.
func (s *supervisor) strays() []gen.Stray {
	var out []gen.Stray
	for _, st := range s.reaper.Strays() {
		out = append(out, gen.Stray(st))
	}
	return out
}

// newStrays returns the strays not already being stopped, and marks them.
func (s *supervisor) newStrays() []gen.Stray {
	all := s.strays()
	if len(all) == 0 {
		return nil
	}
	s.strayMu.Lock()
	defer s.strayMu.Unlock()
	if s.strayStopping == nil {
		s.strayStopping = map[int]bool{}
	}
	var out []gen.Stray
	for _, st := range all {
		if !s.strayStopping[st.PID] {
			s.strayStopping[st.PID] = true
			out = append(out, st)
		}
	}
	return out
}

// stopStrays sends the stop signal to each stray's process group (or to the
// stray, if it leads none), and SIGKILL to those still there after the
// drain timeout.
func (s *supervisor) stopStrays(strays []gen.Stray) {
	for _, st := range strays {
		target := st.PID
		if st.PGID == st.PID {
			target = -st.PID
		}
		_ = unix.Kill(target, s.cfg.StopSignal)
	}
	time.AfterFunc(s.cfg.DrainTimeout, func() { s.killStrays(strays) })
}

// killStrays kills the strays that are still handoff's live children (so
// that a pid reused since is not hit) and forgets them.
func (s *supervisor) killStrays(strays []gen.Stray) {
	live := map[int]bool{}
	for _, st := range s.strays() {
		live[st.PID] = true
	}
	s.strayMu.Lock()
	defer s.strayMu.Unlock()
	for _, st := range strays {
		if live[st.PID] {
			s.log.Warn("a process left behind did not exit within the drain timeout; killing it", "event", "strays.kill", "pid", st.PID, "cmd", st.Cmd)
			killStray(st)
		}
		delete(s.strayStopping, st.PID)
	}
}

// stopAllStrays stops, as handoff exits, whatever the generations left that
// is still running, and waits up to the drain timeout for it (then kills
// it), so that nothing handoff started outlives it.
func (s *supervisor) stopAllStrays() {
	left := s.strays()
	if len(left) == 0 {
		return
	}
	// Those already being stopped were reported when their generation
	// exited; they are waited for all the same.
	var fresh []gen.Stray
	s.strayMu.Lock()
	for _, st := range left {
		if !s.strayStopping[st.PID] {
			fresh = append(fresh, st)
		}
	}
	s.strayMu.Unlock()
	if len(fresh) > 0 {
		s.log.Warn("processes left behind by the generations are still running; stopping them before handoff exits", "event", "strays.stopping", "left", gen.StrayList(fresh))
	}
	for _, st := range left {
		target := st.PID
		if st.PGID == st.PID {
			target = -st.PID
		}
		_ = unix.Kill(target, s.cfg.StopSignal)
	}
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	for len(s.strays()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	killed := s.strays()
	for _, st := range killed {
		s.log.Warn("killing a process left behind", "event", "strays.killing", "pid", st.PID, "cmd", st.Cmd)
		killStray(st)
	}
	// A process killed is not gone at once: its exit, and that of the
	// children it had in its group (handoff's as it exits), take a moment.
	// handoff exits after them, or after a second.
	deadline = time.Now().Add(time.Second)
	for len(killed) > 0 && len(s.strays()) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// killStray sends SIGKILL to st, and to its process group if it leads one.
func killStray(st gen.Stray) {
	if st.PGID == st.PID {
		_ = unix.Kill(-st.PID, syscall.SIGKILL)
	}
	_ = unix.Kill(st.PID, syscall.SIGKILL)
}
