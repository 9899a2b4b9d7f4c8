package machine

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// kill sends g SIGKILL, once, and counts it.
func (m *Machine) kill(g *gen.Gen) {
	if !g.Killed {
		g.Killed = true
		m.killed++
	}
	m.do(gen.ActSignal{G: g, Sig: "SIGKILL"})
}

// onHung: a process stopped sending WATCHDOG=1. It gets SIGABRT (a stack
// dump, from most runtimes) and SIGKILL a second later.
func (m *Machine) onHung(e gen.EvHung) {
	e.G.Hung = true
	m.log(slog.LevelError, "generation.hung", "generation hung: no WATCHDOG=1 within WatchdogSec; killing it", append(m.about(e.G), "quiet", e.Quiet.Round(time.Millisecond).String())...)
	m.do(gen.ActSignal{G: e.G, Sig: "SIGABRT"}, gen.ActAfter{D: time.Second, Ev: gen.EvKillDue{G: e.G}})
}

// onNotReady: a starting process was not ready within --ready-timeout: it
// is killed, and fails when it exits.
func (m *Machine) onNotReady(e gen.EvNotReady) {
	if !m.isNext(e.G) || e.G.State != gen.Starting {
		return
	}
	e.G.FailWhy = fmt.Sprintf("was not ready within %v (--ready-timeout)", m.readyTimeout)
	if e.Why != "" {
		e.G.FailWhy += ": " + e.Why
	}
	m.log(slog.LevelWarn, "generation.not_ready", "generation not ready in time; killing it", m.about(e.G)...)
	m.kill(e.G)
}

// onLeft: a process left others behind at its exit; they are stopped.
func (m *Machine) onLeft(e gen.EvLeft) {
	e.G.Left = e.Strays
	m.log(slog.LevelWarn, "generation.strays", "generation left processes behind; stopping them", append(m.about(e.G), "left", gen.StrayList(e.Strays))...)
	m.do(gen.ActStopStrays{Strays: e.Strays})
}

// onKillDue: g's --drain-timeout has passed; if it still runs, it is
// killed.
func (m *Machine) onKillDue(g *gen.Gen) {
	if g.State != gen.Exited {
		m.log(slog.LevelWarn, "generation.drain_timeout", "generation did not exit within the drain timeout; killing it", append(m.about(g), "drain_timeout", m.drainTimeout.String())...)
		m.counts.drainsKilled++
		m.kill(g)
	}
}

// onRestartDue: worker index w's restart backoff is over: it starts again,
// unless a stop began or something took its place meanwhile.
func (m *Machine) onRestartDue(w int) {
	sl := &m.slots[w]
	if m.stopping() || sl.cur != nil || sl.next != nil {
		return
	}
	m.restarts++
	sl.restarts++
	spec := sl.spec
	if m.workerCount() == 1 {
		spec = nil // one worker: a restart runs what the configuration says now
	}
	m.do(gen.ActSpawn{N: m.nextN, Spec: spec, W: w})
}

func (m *Machine) onExit(e gen.EvExited) {
	g, err := e.G, e.Err
	prev := g.State
	g.State = gen.Exited
	m.do(gen.ActRelease{G: g})
	for i, x := range m.gens {
		if x == g {
			m.gens = append(m.gens[:i], m.gens[i+1:]...)
			break
		}
	}
	how := e.How
	if how == "" {
		how = "exit status 0"
		if err != nil {
			how = err.Error()
		}
	}
	var sl *slot
	if g.W < len(m.slots) {
		sl = &m.slots[g.W]
	}
	switch {
	case sl != nil && g == sl.next:
		sl.next = nil
		why := g.FailWhy
		if why == "" && err == nil && len(g.Left) > 0 {
			why = fmt.Sprintf("daemonized: its process exited 0 and left %s running in the background, now stopped — run the program in the foreground "+
				"(nginx: 'daemon off;', memcached: without -d, gunicorn: without --daemon, else its --foreground or --no-daemon option)", gen.StrayList(g.Left))
		}
		if why == "" && prev == gen.Baking {
			why = "died during the bake window (" + how + ")"
		} else if why == "" {
			why = "exited before it was ready (" + how + ")"
		}
		reason := fmt.Sprintf("%s %s", m.name(g), why)
		if lines := e.Lines; len(lines) > 0 {
			reason += "; it printed last: " + strings.Join(lines, " | ")
		}
		m.log(slog.LevelError, "generation.failed", "new generation failed", append(m.about(g), "reason", reason)...)
		r := m.roll
		switch {
		case m.stopping():
		case m.phase == phaseStarting && !g.Restart:
			m.log(slog.LevelError, "program.failed", "the program failed at start; handoff exits", "reason", reason)
			m.exitCode = 1
			m.stop(true)
		case r != nil && g.N == r.n:
			code := "exited"
			switch {
			case prev == gen.Baking:
				code = "died_baking"
			case g.FailWhy != "":
				code = "not_ready"
			}
			m.failRoll(g, code, reason, "")
		}
		if sl.cur == nil && sl.next == nil && !m.stopping() {
			m.scheduleRestart(g.W)
		}
		// A roll that waited for this worker index to restart starts its
		// own process there instead.
		m.advanceRoll()
		m.afterNext()
	case sl != nil && g == sl.cur:
		sl.cur = nil
		if m.stopping() {
			m.log(slog.LevelInfo, "generation.exited", "generation exited", append(m.about(g), "status", how)...)
			return
		}
		if m.now().Sub(g.ReadyAt) >= stableAfter {
			sl.backoff, sl.crashes = 0, 0
		}
		sl.crashes++
		m.log(slog.LevelWarn, "generation.crashed", "generation exited on its own; restarting it", append(m.about(g), "status", how, "last_output", strings.Join(e.Lines, " | "))...)
		if sl.next == nil {
			m.scheduleRestart(g.W)
		}
	default:
		args := append(m.about(g), "status", how)
		if !g.ExitedAt.IsZero() {
			// It was draining: ExitedAt is when its drain began. (A process
			// stopped before it ever served has no drain to measure.)
			if m.counts.drainSec == nil {
				m.counts.drainSec = promtext.NewHistogram(drainBuckets...)
			}
			m.counts.drainSec.Observe(m.now().Sub(g.ExitedAt).Seconds())
			args = append(args, "drain_ms", m.now().Sub(g.ExitedAt).Milliseconds())
		}
		m.log(slog.LevelInfo, "generation.exited", "generation exited", args...)
		if r := m.roll; r != nil && r.draining[g] {
			delete(r.draining, g)
			m.advanceRoll()
		}
	}
}

// failingAfter is how many exits in a row mark a worker as one that keeps
// crashing: said in the log, in status and in systemd's STATUS=.
const failingAfter = 5

// scheduleRestart restarts worker w after its backoff.
func (m *Machine) scheduleRestart(w int) {
	sl := &m.slots[w]
	switch {
	case sl.backoff == 0:
		sl.backoff = restartMin
	case sl.backoff < restartMax:
		sl.backoff = min(2*sl.backoff, restartMax)
	}
	args := []any{"in", sl.backoff.String()}
	if m.workerCount() > 1 {
		args = append(args, "worker", w)
	}
	m.log(slog.LevelInfo, "restart.scheduled", "restart scheduled; the sockets stay open meanwhile", args...)
	if sl.crashes == failingAfter {
		m.log(slog.LevelError, "worker.failing", "worker keeps crashing; restarts go on, each after the longest backoff",
			"worker", w, "crashes", sl.crashes, "backoff_max", restartMax.String())
		m.do(gen.ActNotify{Kind: "status", Status: m.servingStatus()})
	}
	m.do(gen.ActAfter{D: sl.backoff, Ev: gen.EvRestartDue{W: w}})
}

// Restart backoff for a generation that exits on its own: doubled on each
// failure in a row, from restartMin up to restartMax; a generation that
// served for stableAfter resets it.
const (
	restartMin  = 100 * time.Millisecond
	restartMax  = 10 * time.Second
	stableAfter = 10 * time.Second
)
