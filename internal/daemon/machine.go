package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/lifecycle"
)

// machine is the supervisor's state: the generations, the reload under way
// and the one queued, the restart backoff and the stop. Its one transition
// function, step, takes an event and returns the actions to carry out; it
// does no I/O, so that tests drive it in-process. The supervisor's goroutine
// turns what happens into events and the actions into calls.
type machine struct {
	bake         time.Duration
	maxDraining  int
	readyTimeout time.Duration
	drainTimeout time.Duration
	stopSignal   syscall.Signal
	pid1         bool // handoff is PID 1: it must not upgrade itself
	now          func() time.Time

	gens       []*generation // not exited, oldest first
	current    *generation   // serving
	next       *generation   // starting or baking
	nextN      int
	firstReady bool
	// previous is what the generation current before the current one ran:
	// what a rollback runs. A generation that failed never counts.
	previous *runSpec
	// rollingBack: the reload under way runs previous.
	rollingBack bool
	spawning    spawnKind // why the spawn asked for was asked

	reloading   bool
	extending   bool // an extendTick is on its way
	reloadStart time.Time
	q           lifecycle.Queue[chan<- ReloadResult] // who waits for the reload under way, and the one queued

	restarts    int
	killed      int // generations killed with SIGKILL: not ready in time, hung, past the drain timeout or --max-draining, a second stop signal
	backoff     time.Duration
	stopping    bool
	stops       lifecycle.Stops // stop signals, and the stop delay
	closing     bool            // a stop holds new connections back before the generations drain
	exitCode    int
	selfUpgrade bool

	out []action
}

// spawnKind says why a generation is started.
type spawnKind int

const (
	spawnFirst   spawnKind = iota // handoff's start
	spawnReload                   // a reload
	spawnRestart                  // the serving generation exited on its own
)

// Events, besides the generations' own (genReady, genNotReady, genExited).
type (
	evStart       struct{}
	evSignal      struct{ sig syscall.Signal }
	evReload      struct{ w chan<- ReloadResult }
	evRollback    struct{ w chan<- ReloadResult }
	evSpawned     struct{ g *generation }
	evSpawnFailed struct{ err error }
	evHandedOver  struct{} // a new handoff took over (SIGUSR2)
	evHung        struct {
		g     *generation
		quiet time.Duration
	}
	bakeDone        struct{ g *generation }
	extendTick      struct{}
	stopDelayOver   struct{}
	killDue         struct{ g *generation }
	restartDue      struct{}
	selfUpgradeDone struct{ err error }
	// doorsClosed: new connections are held back for a stop (see
	// supervisor.closeDoors).
	doorsClosed struct {
		held int      // sockets that drop new connections
		left []string // sockets left open to them: handoff's parent (a service manager) holds them too
		// parentUnknown: handoff could not read its parent's descriptors,
		// and left every socket alone.
		parentUnknown bool
		queued        int           // connections still queued or half open when the wait ended
		took          time.Duration // how long it took
		err           error
	}
)

// event is what step takes: one of the types above, or a generation's own
// (genReady, genNotReady, genExited, genLeft, bakeFailed). A sealed
// interface, whose every type step handles (TestSwitchesAreExhaustive).
type event interface{ isEvent() }

func (evStart) isEvent()         {}
func (evSignal) isEvent()        {}
func (evReload) isEvent()        {}
func (evRollback) isEvent()      {}
func (evSpawned) isEvent()       {}
func (evSpawnFailed) isEvent()   {}
func (evHandedOver) isEvent()    {}
func (evHung) isEvent()          {}
func (bakeDone) isEvent()        {}
func (extendTick) isEvent()      {}
func (stopDelayOver) isEvent()   {}
func (killDue) isEvent()         {}
func (restartDue) isEvent()      {}
func (selfUpgradeDone) isEvent() {}
func (doorsClosed) isEvent()     {}
func (genReady) isEvent()        {}
func (genExited) isEvent()       {}
func (genNotReady) isEvent()     {}
func (genLeft) isEvent()         {}
func (bakeFailed) isEvent()      {}

// action is one of the act* types below: a sealed interface, whose every
// type the supervisor carries out (TestSwitchesAreExhaustive).
type action interface{ isAction() }

func (actLog) isAction()              {}
func (actSpawn) isAction()            {}
func (actSignal) isAction()           {}
func (actAfter) isAction()            {}
func (actRelease) isAction()          {}
func (actCancelReady) isAction()      {}
func (actNotify) isAction()           {}
func (actUpgraderReady) isAction()    {}
func (actUpgraderStop) isAction()     {}
func (actReply) isAction()            {}
func (actSelfUpgrade) isAction()      {}
func (actSelfUpgradeEnded) isAction() {}
func (actCloseDoors) isAction()       {}
func (actReleaseSockets) isAction()   {}
func (actWatchBake) isAction()        {}
func (actStopStrays) isAction()       {}
func (actDone) isAction()             {}

// Actions.
type (
	actLog struct {
		level slog.Level
		event string
		msg   string
		args  []any
	}
	actSpawn struct {
		n    int
		spec *runSpec // nil: as the configuration resolves now
	}
	actSignal struct {
		g   *generation
		sig syscall.Signal
	}
	actAfter struct {
		d  time.Duration
		ev event
	}
	actRelease     struct{ g *generation } // it exited: close what it held
	actCancelReady struct{ g *generation } // stop waiting for its readiness
	actNotify      struct {
		kind   string // "ready", "reloading", "status", "stopping"
		status string
	}
	actUpgraderReady struct{}
	actUpgraderStop  struct{}
	actReply         struct {
		ws []chan<- ReloadResult
		r  ReloadResult
	}
	actSelfUpgrade      struct{ nextN int }
	actSelfUpgradeEnded struct{}
	actCloseDoors       struct{}           // a stop begins: hold new connections back, let the generations take the queued ones
	actReleaseSockets   struct{}           // every generation has the stop signal: close handoff's copies of the sockets
	actDone             struct{ code int } // every generation has exited: handoff exits
)

func (m *machine) do(a ...action) { m.out = append(m.out, a...) }

// kill sends g SIGKILL, once, and counts it.
func (m *machine) kill(g *generation) {
	if !g.killed {
		g.killed = true
		m.killed++
	}
	m.do(actSignal{g, syscall.SIGKILL})
}

// log logs msg, with event, the record's stable key (see docs/daemon.md,
// "Log events"): what log shippers and tests match, whatever the wording.
func (m *machine) log(level slog.Level, event, msg string, args ...any) {
	m.do(actLog{level, event, msg, args})
}

// step applies ev and returns the actions to carry out, in order.
func (m *machine) step(ev event) []action {
	m.out = nil
	switch e := ev.(type) {
	case evStart:
		m.spawn(spawnFirst)
	case evSignal:
		m.onSignal(e.sig)
	case evReload:
		m.log(slog.LevelInfo, "reload.asked", "reload asked", "by", "handoff reload")
		m.askReload(e.w)
	case evRollback:
		m.log(slog.LevelInfo, "rollback.asked", "rollback asked", "by", "handoff rollback")
		m.rollback(e.w)
	case evSpawned:
		m.onSpawned(e.g)
	case evSpawnFailed:
		m.onSpawnFailed(e.err)
	case evHandedOver:
		m.log(slog.LevelInfo, "upgrade.done", "handed over to the new handoff; stopping this one's generations")
		m.stop(false)
	case evHung:
		e.g.hung = true
		m.log(slog.LevelError, "generation.hung", "generation hung: no WATCHDOG=1 within WatchdogSec; killing it", "gen", e.g.n, "gen_pid", e.g.pid, "quiet", e.quiet.Round(time.Millisecond).String())
		m.do(actSignal{e.g, syscall.SIGABRT}, actAfter{time.Second, killDue{e.g}})
	case genReady:
		m.onReady(e.g)
	case genNotReady:
		if e.g == m.next && e.g.state == starting {
			e.g.failWhy = fmt.Sprintf("was not ready within %v (--ready-timeout)", m.readyTimeout)
			var na *notAccepting
			if errors.As(e.err, &na) || errors.Is(e.err, errNoReadyNotify) {
				e.g.failWhy += ": " + e.err.Error()
			}
			m.log(slog.LevelWarn, "generation.not_ready", "generation not ready in time; killing it", "gen", e.g.n, "gen_pid", e.g.pid)
			m.kill(e.g)
		}
	case genLeft:
		e.g.left = e.strays
		m.log(slog.LevelWarn, "generation.strays", "generation left processes behind; stopping them", "gen", e.g.n, "gen_pid", e.g.pid, "left", strayList(e.strays))
		m.do(actStopStrays{e.strays})
	case genExited:
		m.onExit(e.g, e.err)
	case bakeDone:
		if e.g == m.next && e.g.state == baking {
			m.log(slog.LevelInfo, "bake.done", "bake window over", "gen", e.g.n, "gen_pid", e.g.pid)
			m.promote(e.g)
		}
	case bakeFailed:
		m.onBakeFailed(e.g, e.reason)
	case killDue:
		if e.g.state != exited {
			m.log(slog.LevelWarn, "generation.drain_timeout", "generation did not exit within the drain timeout; killing it", "gen", e.g.n, "gen_pid", e.g.pid, "drain_timeout", m.drainTimeout.String())
			m.kill(e.g)
		}
	case restartDue:
		if !m.stopping && m.current == nil && m.next == nil {
			m.restarts++
			m.spawn(spawnRestart)
		}
	case extendTick:
		m.extending = m.reloading
		if m.reloading {
			m.do(actNotify{"extend", ""}, actAfter{lifecycle.ExtendEvery, extendTick{}})
		}
	case doorsClosed:
		if m.closing {
			m.closing = false
			m.doorsClosed(e)
			m.drainAll(true)
		}
	case stopDelayOver:
		if m.stops.DelayOver() {
			m.log(slog.LevelInfo, "stop.delay_over", "stop delay over; stopping every generation")
			m.stop(true)
		}
	case selfUpgradeDone:
		m.selfUpgrade = false
		m.do(actSelfUpgradeEnded{})
		if e.err != nil {
			m.log(slog.LevelError, "upgrade.failed", "handoff upgrade failed; this handoff keeps running", "err", e.err)
		}
	}
	if m.stopping && len(m.gens) == 0 {
		m.do(actDone{m.exitCode})
	}
	return m.out
}

func (m *machine) onSignal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGHUP:
		m.log(slog.LevelInfo, "reload.asked", "reload asked", "signal", "SIGHUP")
		m.askReload(nil)
	case syscall.SIGUSR2:
		m.upgradeSelf()
	case syscall.SIGTERM, syscall.SIGINT:
		switch m.stops.Signal(!m.stopping) {
		case lifecycle.StopSkipDelay:
			m.log(slog.LevelInfo, "stop.delay_skipped", "stop signal again: skipping the rest of the stop delay", "signal", unixName(sig))
			m.stop(true)
			return
		case lifecycle.StopDelay:
			d := m.stops.Delay
			m.log(slog.LevelInfo, "stop.delayed", "stop asked; the generations serve on for the stop delay, then drain", "signal", unixName(sig), "stop_delay", d.String())
			m.do(actNotify{"stopping", fmt.Sprintf("stopping in %v (stop delay)", d)}, actAfter{d, stopDelayOver{}})
			fail := ReloadResult{Error: "handoff is stopping"}
			m.finishReload(fail)
			m.do(actReply{m.q.Drop(), fail})
			return
		case lifecycle.StopAgain, lifecycle.StopNow:
			m.log(slog.LevelWarn, "stop.kill", "stop signal again: killing every generation", "signal", unixName(sig))
			for _, g := range m.gens {
				m.kill(g)
			}
			return
		}
		m.log(slog.LevelInfo, "stop.asked", "stop asked", "signal", unixName(sig))
		m.stop(true)
	}
}

// spawn asks for the next generation; evSpawned or evSpawnFailed follows.
func (m *machine) spawn(why spawnKind) {
	m.spawning = why
	var spec *runSpec
	if why == spawnReload && m.rollingBack {
		spec = m.previous
	}
	m.do(actSpawn{m.nextN, spec})
}

func (m *machine) onSpawned(g *generation) {
	m.nextN++
	g.restart = m.spawning == spawnRestart
	m.gens = append(m.gens, g)
	m.next = g
	m.log(slog.LevelInfo, "generation.started", "generation started", "gen", g.n, "gen_pid", g.pid, "restart", g.restart, "launch", g.launch)
}

func (m *machine) onSpawnFailed(err error) {
	switch m.spawning {
	case spawnFirst:
		m.log(slog.LevelError, "start.failed", "cannot start the program", "err", err)
		m.do(actDone{1})
	case spawnReload:
		m.log(slog.LevelError, "reload.failed", "reload failed", "err", err)
		m.do(actNotify{"ready", "reload failed: " + err.Error()})
		m.finishReload(ReloadResult{Error: "reload failed: " + err.Error()})
		m.afterNext()
	case spawnRestart:
		m.log(slog.LevelError, "restart.failed", "cannot restart the program", "err", err)
		m.scheduleRestart()
	}
}

func (m *machine) onReady(g *generation) {
	if g != m.next || g.state != starting {
		return
	}
	g.readyAt = m.now()
	m.log(slog.LevelInfo, "generation.ready", "generation ready", "gen", g.n, "gen_pid", g.pid, "ready_ms", g.readyAt.Sub(g.started).Milliseconds())
	if m.bake > 0 && m.current != nil {
		g.state = baking
		m.log(slog.LevelInfo, "bake.started", "baking: the old generation serves on", "gen", g.n, "gen_pid", g.pid, "bake", m.bake.String())
		m.do(actAfter{m.bake, bakeDone{g}}, actWatchBake{g, m.current})
		return
	}
	m.promote(g)
}

// onBakeFailed rolls back g, which bakes and was shown not to serve: it is
// stopped, and the generation it was to replace serves on.
func (m *machine) onBakeFailed(g *generation, reason string) {
	if g != m.next || g.state != baking || m.current == nil {
		return
	}
	g.failWhy = "failed its bake window: it " + reason
	m.log(slog.LevelError, "bake.failed", "new generation does not serve; rolling it back, the old one serves on", "gen", g.n, "gen_pid", g.pid, "serving", m.current.n, "reason", reason)
	m.drain(g)
	m.next = nil
	why := fmt.Sprintf("generation %d (pid %d) %s", g.n, g.pid, g.failWhy)
	m.do(actNotify{"ready", fmt.Sprintf("reload rolled back: %s; serving generation %d", why, m.current.n)})
	m.finishReload(ReloadResult{Error: "reload failed: " + why})
	m.afterNext()
}

// promote makes g the serving generation and drains the one before it.
func (m *machine) promote(g *generation) {
	old := m.current
	if old != nil && old.spec != nil {
		m.previous = old.spec
	}
	g.state, m.current, m.next = serving, g, nil
	if old != nil {
		m.drain(old)
	}
	status := fmt.Sprintf("serving generation %d (pid %d)", g.n, g.pid)
	switch {
	case !m.firstReady:
		m.firstReady = true
		m.do(actUpgraderReady{}, actNotify{"status", status})
	case m.reloading:
		m.do(actNotify{"ready", status})
	default:
		m.do(actNotify{"status", status})
	}
	if m.reloading {
		took := m.now().Sub(m.reloadStart)
		m.log(slog.LevelInfo, "reload.done", "reload done", "gen", g.n, "gen_pid", g.pid, "reload_ms", took.Milliseconds())
		m.finishReload(ReloadResult{OK: true, Generation: g.n, PID: g.pid, Millis: took.Milliseconds()})
	}
	m.afterNext()
}

// drain asks g to stop, and kills it after the drain timeout; past
// --max-draining, the oldest draining generation is killed at once.
func (m *machine) drain(g *generation) {
	g.state = draining
	g.exitedAt = m.now() // when the drain began, until it exits
	m.do(actSignal{g, m.stopSignal}, actAfter{m.drainTimeout, killDue{g}})
	m.log(slog.LevelInfo, "generation.draining", "draining", "gen", g.n, "gen_pid", g.pid, "signal", unixName(m.stopSignal))
	var drainingGens []*generation
	for _, d := range m.gens {
		if d.state == draining {
			drainingGens = append(drainingGens, d)
		}
	}
	for i := 0; len(drainingGens)-i > m.maxDraining; i++ {
		d := drainingGens[i]
		m.log(slog.LevelWarn, "generation.too_many_draining", "too many generations draining (--max-draining); killing the oldest", "gen", d.n, "gen_pid", d.pid, "max", m.maxDraining)
		m.kill(d)
	}
}

func (m *machine) onExit(g *generation, err error) {
	prev := g.state
	g.state = exited
	m.do(actRelease{g})
	for i, x := range m.gens {
		if x == g {
			m.gens = append(m.gens[:i], m.gens[i+1:]...)
			break
		}
	}
	how := describeExit(err)
	switch {
	case g == m.next:
		m.next = nil
		why := g.failWhy
		if why == "" && err == nil && len(g.left) > 0 {
			why = fmt.Sprintf("daemonized: its process exited 0 and left %s running in the background, now stopped — run the program in the foreground "+
				"(nginx: 'daemon off;', memcached: without -d, gunicorn: without --daemon, else its --foreground or --no-daemon option)", strayList(g.left))
		}
		if why == "" && prev == baking {
			why = "died during the bake window (" + how + ")"
		} else if why == "" {
			why = "exited before it was ready (" + how + ")"
		}
		reason := fmt.Sprintf("generation %d (pid %d) %s", g.n, g.pid, why)
		if lines := g.lastLines(); len(lines) > 0 {
			reason += "; it printed last: " + strings.Join(lines, " | ")
		}
		m.log(slog.LevelError, "generation.failed", "new generation failed", "gen", g.n, "gen_pid", g.pid, "reason", reason)
		switch {
		case m.stopping:
		case !m.firstReady && !g.restart:
			m.log(slog.LevelError, "program.failed", "the program failed at start; handoff exits", "reason", reason)
			m.exitCode = 1
			m.stop(true)
		case m.reloading:
			m.do(actNotify{"ready", fmt.Sprintf("reload failed: %s; serving generation %d", reason, m.currentN())})
			m.finishReload(ReloadResult{Error: "reload failed: " + reason})
		}
		if m.current == nil && !m.stopping {
			m.scheduleRestart()
		}
		m.afterNext()
	case g == m.current:
		m.current = nil
		if m.stopping {
			m.log(slog.LevelInfo, "generation.exited", "generation exited", "gen", g.n, "gen_pid", g.pid, "status", how)
			return
		}
		if m.now().Sub(g.readyAt) >= stableAfter {
			m.backoff = 0
		}
		m.log(slog.LevelWarn, "generation.crashed", "generation exited on its own; restarting it", "gen", g.n, "gen_pid", g.pid, "status", how, "last_output", strings.Join(g.lastLines(), " | "))
		if m.next == nil {
			m.scheduleRestart()
		}
	default:
		m.log(slog.LevelInfo, "generation.exited", "generation exited", "gen", g.n, "gen_pid", g.pid, "status", how, "drain_ms", m.now().Sub(g.exitedAt).Milliseconds())
	}
}

func (m *machine) currentN() int {
	if m.current == nil {
		return 0
	}
	return m.current.n
}

func (m *machine) scheduleRestart() {
	switch {
	case m.backoff == 0:
		m.backoff = restartMin
	case m.backoff < restartMax:
		m.backoff = min(2*m.backoff, restartMax)
	}
	m.log(slog.LevelInfo, "restart.scheduled", "restart scheduled; the sockets stay open meanwhile", "in", m.backoff.String())
	m.do(actAfter{m.backoff, restartDue{}})
}

// askReload starts a reload, or queues one if a generation is already on its
// way. w, if not nil, receives the result.
func (m *machine) askReload(w chan<- ReloadResult) {
	if m.stopping || m.stops.Delaying() {
		if m.stops.Delaying() {
			m.log(slog.LevelInfo, "reload.refused", "reload refused: stopping, after the stop delay")
		}
		if w != nil {
			m.do(actReply{[]chan<- ReloadResult{w}, ReloadResult{Error: "handoff is stopping"}})
		}
		return
	}
	if m.next != nil {
		if m.q.Enqueue(waiting(w)...) {
			m.log(slog.LevelInfo, "reload.queued", "reload queued: a new generation is already starting", "gen", m.next.n)
		}
		return
	}
	m.q.Join(waiting(w)...)
	m.startReload()
}

func (m *machine) startReload() {
	m.reloading = true
	m.reloadStart = m.now()
	m.do(actNotify{"reloading", fmt.Sprintf("reloading: starting generation %d", m.nextN)}, actNotify{"extend", ""})
	if !m.extending {
		// One chain of ticks, however many reloads follow one another.
		m.extending = true
		m.do(actAfter{lifecycle.ExtendEvery, extendTick{}})
	}
	m.spawn(spawnReload)
}

func (m *machine) finishReload(r ReloadResult) {
	m.do(actReply{m.q.Finish(), r})
	m.reloading, m.rollingBack = false, false
}

// waiting returns w as a list of those who wait, none if w is nil.
func waiting(w chan<- ReloadResult) []chan<- ReloadResult {
	if w == nil {
		return nil
	}
	return []chan<- ReloadResult{w}
}

// rollback stops a new generation that bakes, keeping the one it was to
// replace; otherwise it starts a generation from what the previous current
// generation ran, as a reload does.
func (m *machine) rollback(w chan<- ReloadResult) {
	reply := func(r ReloadResult) { m.do(actReply{[]chan<- ReloadResult{w}, r}) }
	switch {
	case m.stopping || m.stops.Delaying():
		reply(ReloadResult{Error: "handoff is stopping"})
	case m.next != nil && m.next.state == baking && m.current != nil:
		g := m.next
		m.log(slog.LevelWarn, "rollback.stopping", "rollback: stopping the generation that bakes; the old one serves on", "gen", g.n, "gen_pid", g.pid, "serving", m.current.n)
		g.failWhy = "was rolled back during its bake window"
		m.drain(g)
		m.next = nil
		m.do(actNotify{"ready", fmt.Sprintf("rolled back: serving generation %d (pid %d)", m.current.n, m.current.pid)})
		r := ReloadResult{Error: fmt.Sprintf("reload failed: generation %d (pid %d) was rolled back during its bake window", g.n, g.pid)}
		m.finishReload(r)
		reply(ReloadResult{OK: true, Generation: m.current.n, PID: m.current.pid})
		m.afterNext()
	case m.next != nil:
		reply(ReloadResult{Error: fmt.Sprintf("generation %d is starting; roll back once it is ready (or failed)", m.next.n)})
	case m.previous == nil:
		reply(ReloadResult{Error: "nothing to roll back to: no generation served before the current one"})
	default:
		m.q.Join(waiting(w)...)
		m.rollingBack = true
		m.log(slog.LevelInfo, "rollback.started", "rolling back", "program", m.previous.Program, "dir", m.previous.Dir)
		m.startReload()
	}
}

// afterNext starts the queued reload, if any, once no generation is on its
// way.
func (m *machine) afterNext() {
	if m.next != nil || !m.q.Queued() || m.stopping {
		return
	}
	m.q.Promote()
	m.log(slog.LevelInfo, "reload.dequeued", "starting the queued reload")
	m.startReload()
}

// stop asks every generation to stop; handoff exits once they have.
// real is false after handing over to a new handoff.
func (m *machine) stop(real bool) {
	if m.stopping {
		return
	}
	m.stopping = true
	fail := ReloadResult{Error: "handoff is stopping"}
	m.finishReload(fail)
	m.do(actReply{m.q.Drop(), fail})
	if real {
		m.do(actNotify{"stopping", "stopping every generation"})
		if m.selfUpgrade {
			// A new handoff is starting: have the upgrader kill it, or
			// it would take over after this one stopped.
			m.do(actUpgraderStop{})
		}
	}
	m.next = nil
	if real && slices.ContainsFunc(m.gens, func(g *generation) bool { return g.state != draining }) {
		// The generations serve on while the connections already queued
		// are taken; doorsClosed drains them.
		m.closing = true
		m.do(actCloseDoors{})
		return
	}
	m.drainAll(real)
}

// drainAll has every generation that is not draining yet drain; real, it
// then releases handoff's copies of the sockets.
func (m *machine) drainAll(real bool) {
	for _, g := range m.gens {
		if g.state != draining && !g.killed {
			m.do(actCancelReady{g})
			m.drain(g)
		}
	}
	if real {
		// From here the sockets live as long as a generation holds them:
		// once none accepts, a connection is refused, not queued and reset.
		m.do(actReleaseSockets{})
	}
}

// doorsClosed logs how the stop held new connections back.
func (m *machine) doorsClosed(e doorsClosed) {
	if e.err != nil {
		m.log(slog.LevelWarn, "stop.hold_failed", "cannot hold new connections back for the stop: those that come until the generations close the sockets may be reset", "err", e.err)
	}
	switch {
	case len(e.left) > 0 && e.parentUnknown:
		m.log(slog.LevelInfo, "stop.sockets_unknown", "cannot tell whether handoff's parent holds the sockets too (its descriptors cannot be read): they are left open to new connections",
			"sockets", strings.Join(e.left, " "))
	case len(e.left) > 0:
		m.log(slog.LevelInfo, "stop.sockets_kept", "the service manager holds sockets too: connections to them queue for its next start", "sockets", strings.Join(e.left, " "))
	}
	if e.held == 0 {
		return
	}
	if e.queued > 0 {
		m.log(slog.LevelWarn, "stop.queued_left", "connections still queued after the wait: no generation took them, and they will be reset", "queued", e.queued, "waited_ms", e.took.Milliseconds())
		return
	}
	m.log(slog.LevelInfo, "stop.held_back", "new connections held back for the stop; none queued", "sockets", e.held, "waited_ms", e.took.Milliseconds())
}

func (m *machine) upgradeSelf() {
	if m.selfUpgrade || m.stopping || m.stops.Delaying() {
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
	m.do(actSelfUpgrade{m.nextN})
}
