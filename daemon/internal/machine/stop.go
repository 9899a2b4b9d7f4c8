package machine

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/lifecycle"
)

// ExitStopCut is handoff run's exit status after a stop that had to kill a
// generation — a second stop signal, or one still draining at
// --drain-timeout — where a clean stop exits 0.
const ExitStopCut = 3

// onHandedOver: a new handoff took over (SIGUSR2): this one stops its
// generations, without the stop's hold-back, which the new one does not
// need.
func (m *Machine) onHandedOver() {
	m.log(slog.LevelInfo, "upgrade.done", "handed over to the new handoff; stopping this one's generations")
	m.stop(false)
}

// onDoorsClosed: new connections are held back for the stop, and the
// queued ones taken: every generation drains.
func (m *Machine) onDoorsClosed(e gen.EvDoorsClosed) {
	if m.phase == phaseClosing {
		m.phase = phaseStopping
		m.logDoors(e)
		m.drainAll(true)
	}
}

// onStopDelayOver: the stop delay (--stop-delay) is over: the stop goes on.
func (m *Machine) onStopDelayOver() {
	if m.stops.DelayOver() {
		m.log(slog.LevelInfo, "stop.delay_over", "stop delay over; stopping every generation")
		m.stop(true)
	}
}

// onSelfUpgradeDone: the upgrade of handoff itself (SIGUSR2) has ended; if
// it failed, this handoff runs on.
func (m *Machine) onSelfUpgradeDone(err error) {
	m.selfUpgrade = false
	m.do(gen.ActSelfUpgradeEnded{})
	if err != nil {
		m.log(slog.LevelError, "upgrade.failed", "handoff upgrade failed; this handoff keeps running", "err", err)
	}
}

// done: a stop has ended with every process gone: handoff exits, with
// ExitStopCut if the stop had to kill one — an orchestrator must tell that
// from a clean stop.
func (m *Machine) done() {
	code := m.exitCode
	if code == 0 && m.killed > m.killedBeforeStop {
		code = ExitStopCut
	}
	m.do(gen.ActDone{Code: code})
}

func (m *Machine) onSignal(sig string) {
	switch sig {
	case "SIGHUP":
		m.log(slog.LevelInfo, "reload.asked", "reload asked", "signal", "SIGHUP")
		m.askReload(nil)
	case "SIGUSR2":
		m.upgradeSelf()
	case "SIGTERM", "SIGINT":
		switch m.stops.Signal(!m.stopping()) {
		case lifecycle.StopSkipDelay:
			m.log(slog.LevelInfo, "stop.delay_skipped", "stop signal again: skipping the rest of the stop delay", "signal", sig)
			m.stop(true)
			return
		case lifecycle.StopDelay:
			d := m.stops.Delay
			m.log(slog.LevelInfo, "stop.delayed", "stop asked; the generations serve on for the stop delay, then drain", "signal", sig, "stop_delay", d.String())
			m.do(gen.ActNotify{Kind: "stopping", Status: fmt.Sprintf("stopping in %v (stop delay)", d)}, gen.ActAfter{D: d, Ev: gen.EvStopDelayOver{}})
			fail := gen.ReloadResult{Error: "handoff is stopping"}
			m.finishReload(fail)
			m.do(gen.ActReply{WS: m.q.Drop(), R: fail})
			return
		case lifecycle.StopAgain, lifecycle.StopNow:
			m.log(slog.LevelWarn, "stop.kill", "stop signal again: killing every generation", "signal", sig)
			for _, g := range m.gens {
				m.kill(g)
			}
			return
		}
		m.log(slog.LevelInfo, "stop.asked", "stop asked", "signal", sig)
		m.stop(true)
	}
}

// stop asks every generation to stop; handoff exits once they have.
// real is false after handing over to a new handoff.
func (m *Machine) stop(real bool) {
	if m.stopping() {
		return
	}
	// Closing, until it is known whether new connections are held back
	// first (below): either way the stop has begun.
	m.phase = phaseClosing
	m.killedBeforeStop = m.killed
	fail := gen.ReloadResult{Error: "handoff is stopping"}
	if m.reloading {
		m.count("failed", "stopping", 0)
	}
	m.finishReload(fail)
	m.do(gen.ActReply{WS: m.q.Drop(), R: fail})
	if real {
		m.do(gen.ActNotify{Kind: "stopping", Status: "stopping every generation"})
		if m.selfUpgrade {
			// A new handoff is starting: have the upgrader kill it, or
			// it would take over after this one stopped.
			m.do(gen.ActUpgraderStop{})
		}
	}
	if r := m.roll; r != nil {
		m.do(gen.ActReply{WS: r.rollbackWs, R: fail})
		m.roll = nil
	}
	for w := range m.slots {
		m.slots[w].next = nil
	}
	if real && slices.ContainsFunc(m.gens, func(g *gen.Gen) bool { return g.State != gen.Draining }) {
		// The generations serve on while the connections already queued
		// are taken; EvDoorsClosed drains them.
		m.do(gen.ActCloseDoors{})
		return
	}
	m.phase = phaseStopping
	m.drainAll(real)
}

// drainAll has every generation that is not draining yet drain; real, it
// then releases handoff's copies of the sockets.
func (m *Machine) drainAll(real bool) {
	for _, g := range m.gens {
		if g.State != gen.Draining && !g.Killed {
			m.do(gen.ActCancelReady{G: g})
			m.drain(g)
		}
	}
	if real {
		// From here the sockets live as long as a generation holds them:
		// once none accepts, a connection is refused, not queued and reset.
		m.do(gen.ActReleaseSockets{})
	}
}

// logDoors logs how the stop held new connections back.
func (m *Machine) logDoors(e gen.EvDoorsClosed) {
	if e.Err != nil {
		m.log(slog.LevelWarn, "stop.hold_failed", "cannot hold new connections back for the stop: those that come until the generations close the sockets may be reset", "err", e.Err)
	}
	switch {
	case len(e.Left) > 0 && e.ParentUnknown:
		m.log(slog.LevelInfo, "stop.sockets_unknown", "cannot tell whether handoff's parent holds the sockets too (its descriptors cannot be read): they are left open to new connections",
			"sockets", strings.Join(e.Left, " "))
	case len(e.Left) > 0 && e.JobErr != nil:
		m.log(slog.LevelInfo, "stop.sockets_kept", "the service manager holds sockets too: connections to them queue for its next start (cannot tell a restart from a stop)",
			"sockets", strings.Join(e.Left, " "), "err", e.JobErr)
	case len(e.Left) > 0:
		m.log(slog.LevelInfo, "stop.sockets_kept", "the service manager holds sockets too: connections to them queue for its next start", "sockets", strings.Join(e.Left, " "), "job", e.Job)
	}
	if e.Held == 0 {
		return
	}
	if e.Queued > 0 {
		m.log(slog.LevelWarn, "stop.queued_left", "connections still queued after the wait: no generation took them, and they will be reset", "queued", e.Queued, "waited_ms", e.Took.Milliseconds())
		return
	}
	args := []any{"sockets", e.Held, "waited_ms", e.Took.Milliseconds()}
	if e.Job != "" {
		args = append(args, "job", e.Job)
	}
	m.log(slog.LevelInfo, "stop.held_back", "new connections held back for the stop; none queued", args...)
}

func (m *Machine) upgradeSelf() {
	if m.selfUpgrade || m.stopping() || m.stops.Delaying() {
		m.log(slog.LevelInfo, "upgrade.ignored", "SIGUSR2 ignored: an upgrade of handoff or a stop is under way")
		return
	}
	if m.pid1 {
		// The old handoff exits once the new one serves, and PID 1's exit
		// ends the container.
		m.log(slog.LevelWarn, "upgrade.refused", "SIGUSR2 refused: handoff is PID 1, and its exit after the upgrade would end the container; "+
			"restart the container with the new handoff, or SIGHUP to reload the program")
		return
	}
	m.log(slog.LevelInfo, "upgrade.asked", "handoff upgrade asked", "signal", "SIGUSR2")
	m.selfUpgrade = true
	m.do(gen.ActSelfUpgrade{NextN: m.nextN})
}
