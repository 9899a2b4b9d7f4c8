//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"golang.org/x/sys/unix"
)

// sendSignal sends sig to every serving process (every worker of the
// current generation, and a new one while it bakes beside them), unless sig
// would break handoff's bookkeeping.
func (s *supervisor) sendSignal(sig syscall.Signal) control.SignalResult {
	switch sig {
	case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		return control.SignalResult{Error: fmt.Sprintf("%s refused: it would kill or freeze the generation behind handoff's back — use 'handoff reload', or stop handoff", unix.SignalName(sig))}
	case s.cfg.StopSignal:
		return control.SignalResult{Error: fmt.Sprintf("%s refused: it is the stop signal (--stop-signal), and the generation would exit as if it crashed — use 'handoff reload', or stop handoff", unix.SignalName(sig))}
	}
	if sig <= 0 || sig > 64 {
		return control.SignalResult{Error: fmt.Sprintf("no signal number %d", int(sig))}
	}
	var r control.SignalResult
	for _, g := range s.m.View().Gens {
		if g.State != gen.Serving && g.State != gen.Baking {
			continue
		}
		if err := unix.Kill(-g.PID, sig); err != nil {
			return control.SignalResult{Error: fmt.Sprintf("generation %d (pid %d): %v", g.N, g.PID, err)}
		}
		r.Sent, r.Gens = append(r.Sent, g.PID), append(r.Gens, g.N)
	}
	if len(r.Sent) == 0 {
		return control.SignalResult{Error: "no generation is serving"}
	}
	r.OK = true
	s.log.Info("signal sent", "event", "signal.sent", "signal", unix.SignalName(sig), "gen_pids", r.Sent)
	return r
}

// status describes handoff's state for `handoff status`.
func (s *supervisor) status() control.Status {
	v := s.m.View()
	st := control.Status{PID: os.Getpid(), Program: s.cfg.Program, Restarts: v.Restarts, Killed: v.Killed, Unresponsive: v.Unresponsive,
		Reloading: v.Reloading, Queued: v.Queued, Rollback: v.Rollback, ReloadBound: s.reloadBound().Seconds()}
	if v.Handover != nil {
		st.Handover = map[string]int{}
		for k, n := range v.Handover {
			st.Handover[k] = n
		}
	}
	rel := s.releases()
	for _, g := range v.Gens {
		state := g.State.String()
		if g.Unresponsive && g.State == gen.Serving {
			state = "unresponsive" // paused, while its replacement starts
		}
		gs := control.GenStatus{Generation: g.N, Worker: g.W, PID: g.PID, State: state,
			AgeSeconds: time.Since(g.Started).Round(time.Millisecond).Seconds(), Dir: g.Dir}
		if id, ok := rel[g.PID]; ok {
			gs.Release = &id
		}
		st.Generations = append(st.Generations, gs)
	}
	if len(v.Workers) > 1 {
		for w, sl := range v.Workers {
			ws := control.WorkerStatus{Index: w, Restarts: sl.Restarts, Unresponsive: sl.Unresponsive, State: "restarting"}
			switch g := sl.Cur; {
			case g != nil:
				ws.Generation, ws.PID, ws.State = g.N, g.PID, "ready"
				if g.Unresponsive {
					ws.State = "unresponsive"
				}
				ws.UptimeSeconds = time.Since(g.Started).Round(time.Millisecond).Seconds()
				ws.RSSBytes, _ = procfs.ResidentBytes(g.PID)
			case sl.Next != nil:
				ws.Generation, ws.PID, ws.State = sl.Next.N, sl.Next.PID, sl.Next.State.String()
			case sl.Crashing:
				ws.State = "crashing"
			}
			st.Workers = append(st.Workers, ws)
		}
	}
	for i, name := range s.names {
		st.Listeners = append(st.Listeners, control.Socket{Name: name, Addr: s.addrs[i], FD: 3 + i})
	}
	return st
}

// reloadBound returns the longest a reload asked now can take: one under way
// to its end, then its own, each a start bounded by --ready-timeout and a
// bake window, and a margin for reading the env file and starting the
// process.
func (s *supervisor) reloadBound() time.Duration {
	return 2*(s.cfg.ReadyTimeout+s.cfg.Bake) + 30*time.Second
}

// scrape asks the supervisor's goroutine, which owns the machine, for the
// metrics; false if ctx ended first.
func (s *supervisor) scrape(ctx context.Context) ([]byte, bool) {
	reply := make(chan []byte, 1)
	select {
	case s.scrapeC <- reply:
	case <-ctx.Done():
		return nil, false
	}
	select {
	case b := <-reply:
		return b, true
	case <-ctx.Done():
		return nil, false
	}
}
