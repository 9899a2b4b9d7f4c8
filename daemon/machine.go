//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/launch"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/promtext"
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
	workers      int   // processes per generation (--workers); 0 means 1
	surge        int   // processes a roll may run beyond workers (--max-surge); 0 means 1
	maxMemory    int64 // a worker's resident memory past which it is replaced (--max-memory); 0: never

	gens  []*generation // every process not exited, oldest first
	slots []slot        // one per worker index
	// roll is the reload, rollback, first start or replacement under way,
	// nil when none.
	roll  *roll
	nextN int
	// phase is the service's mode: starting, serving, closing, stopping.
	phase phase
	// previous is what the generation current before the current one ran:
	// what a rollback runs. A generation that failed never counts.
	previous *runSpec
	// rollingBack: the reload asked next runs previous.
	rollingBack bool

	reloading   bool
	extending   bool // an evExtendTick is on its way
	reloadStart time.Time
	q           lifecycle.Queue[chan<- ReloadResult] // who waits for the reload under way, and the one queued

	restarts int
	killed   int // generations killed with SIGKILL: not ready in time, hung, past the drain timeout or --max-draining, a second stop signal
	// killedBeforeStop is killed when the stop began.
	killedBeforeStop int
	stops            lifecycle.Stops // stop signals, and the stop delay
	exitCode         int
	selfUpgrade      bool
	measuring        bool // a evMemTick is on its way

	counts counters // for --metrics
	out    []action
}

// counters are what --metrics reports that only the machine sees.
type counters struct {
	// reloads counts reloads and rollbacks by outcome ("ready", "failed",
	// "rolled_back") and, for "failed", reason.
	reloads      map[[2]string]int
	reloadSec    *promtext.Histogram
	drainSec     *promtext.Histogram // from the stop signal to the exit of each process
	drainsKilled int                 // processes killed at --drain-timeout
	unresponsive int                 // processes replaced because they were shown hung
}

// reloadBuckets and drainBuckets are the histograms' upper bounds, in
// seconds.
var (
	reloadBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
	drainBuckets  = []float64{0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
)

// count records a reload's outcome; took is its duration when it ended
// with a new generation serving.
func (m *machine) count(outcome, reason string, took time.Duration) {
	if m.counts.reloads == nil {
		m.counts.reloads = map[[2]string]int{}
	}
	m.counts.reloads[[2]string{outcome, reason}]++
	if outcome == "ready" {
		if m.counts.reloadSec == nil {
			m.counts.reloadSec = promtext.NewHistogram(reloadBuckets...)
		}
		m.counts.reloadSec.Observe(took.Seconds())
	}
}

// ExitStopCut is handoff run's exit status after a stop that had to kill a
// generation — a second stop signal, or one still draining at
// --drain-timeout — where a clean stop exits 0.
const ExitStopCut = 3

// slot is one worker index of the service: the process serving there, the
// one starting to take its place, and its restart books.
type slot struct {
	cur  *generation // serving; nil before its first start is ready, or after it exited
	next *generation // starting or baking to take its place
	spec *runSpec    // what its last worker ran: what a restart runs
	// restarts counts the restarts of this worker; crashes its exits in a
	// row without having served stableAfter, and backoff the wait before
	// the next restart.
	restarts int
	crashes  int
	backoff  time.Duration
	// memWarned: a worker here needed more than --max-memory from its
	// start, and was said to.
	memWarned bool
	// unresponsive counts the processes here replaced because they were
	// shown hung; hungWarned: the one serving now was, too soon after it
	// replaced one for the same, and was said to.
	unresponsive int
	hungWarned   bool
}

// roll is a change of the workers, one worker index after another: new
// processes start before old ones drain, so that the ready workers never
// number fewer than before, and at most surge processes run beyond the
// workers' number — those starting, and the old ones this roll drains until
// they exit. A reload that fails puts the workers it replaced back to what
// they ran (back).
type roll struct {
	kind spawnKind
	// target is the process a replacement (spawnReplace) replaces, and
	// hung says it replaces it because it was shown hung, not for its
	// memory.
	target *generation
	hung   bool
	n      int      // the generation number of the processes it starts
	spec   *runSpec // what they run; nil until the first resolved it
	todo   []int    // worker indexes still to start, in order
	done   []int    // worker indexes replaced so far
	olds   map[int]*runSpec
	surge  int
	// spawning: an actSpawn is on its way (one at a time, so that the
	// first resolves the spec the others run).
	spawning bool
	draining map[*generation]bool // old processes it drained that still run
	// back: putting back the workers replaced before failure, the reason
	// the reload fails, and what to tell systemd.
	back       bool
	failure    string
	code       string // the failure's reason, for --metrics
	notify     string
	putBack    int // workers put back
	backFailed int
	rollbackWs []chan<- ReloadResult // rollbacks that stopped this roll, answered at its end
}

// spawnKind says why a generation is started.
type spawnKind int

const (
	spawnFirst   spawnKind = iota // handoff's start
	spawnReload                   // a reload or a rollback
	spawnReplace                  // a worker passed --max-memory, or was shown hung
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
		m.start()
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
		m.onSpawnFailed(e)
	case evHandedOver:
		m.log(slog.LevelInfo, "upgrade.done", "handed over to the new handoff; stopping this one's generations")
		m.stop(false)
	case evHung:
		e.g.hung = true
		m.log(slog.LevelError, "generation.hung", "generation hung: no WATCHDOG=1 within WatchdogSec; killing it", append(m.about(e.g), "quiet", e.quiet.Round(time.Millisecond).String())...)
		m.do(actSignal{e.g, syscall.SIGABRT}, actAfter{time.Second, evKillDue{e.g}})
	case evReady:
		m.onReady(e.g)
	case evNotReady:
		if m.isNext(e.g) && e.g.state == starting {
			e.g.failWhy = fmt.Sprintf("was not ready within %v (--ready-timeout)", m.readyTimeout)
			var na *notAccepting
			if errors.As(e.err, &na) || errors.Is(e.err, errNoReadyNotify) {
				e.g.failWhy += ": " + e.err.Error()
			}
			m.log(slog.LevelWarn, "generation.not_ready", "generation not ready in time; killing it", m.about(e.g)...)
			m.kill(e.g)
		}
	case evLeft:
		e.g.left = e.strays
		m.log(slog.LevelWarn, "generation.strays", "generation left processes behind; stopping them", append(m.about(e.g), "left", strayList(e.strays))...)
		m.do(actStopStrays{e.strays})
	case evExited:
		m.onExit(e.g, e.err)
	case evBakeDone:
		if m.isNext(e.g) && e.g.state == baking {
			m.log(slog.LevelInfo, "bake.done", "bake window over", m.about(e.g)...)
			m.promote(e.g)
		}
	case evBakeFailed:
		m.onBakeFailed(e.g, e.reason)
	case evUnresponsive:
		m.onUnresponsive(e)
	case evKillDue:
		if e.g.state != exited {
			m.log(slog.LevelWarn, "generation.drain_timeout", "generation did not exit within the drain timeout; killing it", append(m.about(e.g), "drain_timeout", m.drainTimeout.String())...)
			m.counts.drainsKilled++
			m.kill(e.g)
		}
	case evRestartDue:
		if sl := &m.slots[e.w]; !m.stopping() && sl.cur == nil && sl.next == nil {
			m.restarts++
			sl.restarts++
			spec := sl.spec
			if m.workerCount() == 1 {
				spec = nil // one worker: a restart runs what the configuration says now
			}
			m.do(actSpawn{m.nextN, spec, e.w})
		}
	case evMemTick:
		m.measuring = false
		if !m.stopping() && m.maxMemory > 0 {
			m.do(actMeasure{})
		}
	case evMemSample:
		m.onMemory(e.rss)
	case evExtendTick:
		m.extending = m.reloading
		if m.reloading {
			m.do(actNotify{"extend", ""}, actAfter{lifecycle.ExtendEvery, evExtendTick{}})
		}
	case evDoorsClosed:
		if m.phase == phaseClosing {
			m.phase = phaseStopping
			m.logDoors(e)
			m.drainAll(true)
		}
	case evStopDelayOver:
		if m.stops.DelayOver() {
			m.log(slog.LevelInfo, "stop.delay_over", "stop delay over; stopping every generation")
			m.stop(true)
		}
	case evSelfUpgradeDone:
		m.selfUpgrade = false
		m.do(actSelfUpgradeEnded{})
		if e.err != nil {
			m.log(slog.LevelError, "upgrade.failed", "handoff upgrade failed; this handoff keeps running", "err", e.err)
		}
	}
	if m.stopping() && len(m.gens) == 0 {
		code := m.exitCode
		if code == 0 && m.killed > m.killedBeforeStop {
			// The stop had to kill: an orchestrator must tell it from a
			// clean one.
			code = ExitStopCut
		}
		m.do(actDone{code})
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
		switch m.stops.Signal(!m.stopping()) {
		case lifecycle.StopSkipDelay:
			m.log(slog.LevelInfo, "stop.delay_skipped", "stop signal again: skipping the rest of the stop delay", "signal", config.SignalName(sig))
			m.stop(true)
			return
		case lifecycle.StopDelay:
			d := m.stops.Delay
			m.log(slog.LevelInfo, "stop.delayed", "stop asked; the generations serve on for the stop delay, then drain", "signal", config.SignalName(sig), "stop_delay", d.String())
			m.do(actNotify{"stopping", fmt.Sprintf("stopping in %v (stop delay)", d)}, actAfter{d, evStopDelayOver{}})
			fail := ReloadResult{Error: "handoff is stopping"}
			m.finishReload(fail)
			m.do(actReply{m.q.Drop(), fail})
			return
		case lifecycle.StopAgain, lifecycle.StopNow:
			m.log(slog.LevelWarn, "stop.kill", "stop signal again: killing every generation", "signal", config.SignalName(sig))
			for _, g := range m.gens {
				m.kill(g)
			}
			return
		}
		m.log(slog.LevelInfo, "stop.asked", "stop asked", "signal", config.SignalName(sig))
		m.stop(true)
	}
}

// workerCount returns the number of workers per generation.
func (m *machine) workerCount() int { return max(m.workers, 1) }

// about returns the log attributes that name process g: its generation and
// pid, and its worker index where there are several.
func (m *machine) about(g *generation) []any {
	if m.workerCount() == 1 {
		return []any{"gen", g.n, "gen_pid", g.pid}
	}
	return []any{"gen", g.n, "worker", g.w, "gen_pid", g.pid}
}

// isNext reports whether g is starting or baking to take a worker's place.
func (m *machine) isNext(g *generation) bool {
	return g.w < len(m.slots) && m.slots[g.w].next == g
}

// start begins handoff's first generation: every worker at once.
func (m *machine) start() {
	m.slots = make([]slot, m.workerCount())
	r := m.newRoll(spawnFirst)
	r.surge = len(m.slots)
	m.advanceRoll()
}

// newRoll begins a roll over every worker index, under a new generation
// number.
func (m *machine) newRoll(kind spawnKind) *roll {
	r := &roll{kind: kind, n: m.nextN, surge: max(m.surge, 1), olds: map[int]*runSpec{}, draining: map[*generation]bool{}}
	m.nextN++
	for w := range m.slots {
		r.todo = append(r.todo, w)
	}
	m.roll = r
	return r
}

// inFlight counts the processes the roll r runs beyond the workers: its new
// ones starting or baking, and the old ones it drained that still run.
func (m *machine) inFlight(r *roll) int {
	n := len(r.draining)
	for _, sl := range m.slots {
		if sl.next != nil && sl.next.n == r.n {
			n++
		}
	}
	return n
}

// advanceRoll starts the roll's next process if it may, and ends the roll
// once every worker index is done and nothing it started is on its way.
func (m *machine) advanceRoll() {
	r := m.roll
	if r == nil || r.spawning || m.stopping() {
		return
	}
	if len(r.todo) > 0 && m.inFlight(r) < r.surge {
		w := r.todo[0]
		if m.slots[w].next != nil {
			return // a restart of this worker is starting: once it is ready, it is replaced
		}
		r.todo = r.todo[1:]
		spec := r.spec
		if r.back {
			spec = r.olds[w]
		}
		r.spawning = true
		m.do(actSpawn{r.n, spec, w})
		return
	}
	if len(r.todo) == 0 && m.inFlight(r)-len(r.draining) == 0 {
		m.endRoll()
	}
}

func (m *machine) onSpawned(g *generation) {
	r := m.roll
	if r != nil && r.spawning && g.n == r.n {
		r.spawning = false
		g.forMemory = r.kind == spawnReplace && !r.hung
		g.forHung = r.kind == spawnReplace && r.hung
		if r.spec == nil && !r.back {
			r.spec = g.spec
		}
		g.restart = false
	} else {
		// A restart.
		g.restart = true
		if g.n == m.nextN {
			m.nextN++
		}
	}
	m.gens = append(m.gens, g)
	m.slots[g.w].next = g
	m.log(slog.LevelInfo, "generation.started", "generation started", append(m.about(g), "restart", g.restart, "launch", g.launch)...)
	m.advanceRoll()
}

func (m *machine) onSpawnFailed(e evSpawnFailed) {
	r := m.roll
	if r == nil || !r.spawning || e.n != r.n {
		m.log(slog.LevelError, "restart.failed", "cannot restart the program", "err", e.err)
		m.scheduleRestart(e.w)
		return
	}
	r.spawning = false
	switch r.kind {
	case spawnFirst:
		// The workers already started are stopped before handoff exits.
		m.log(slog.LevelError, "start.failed", "cannot start the program", "err", e.err)
		m.exitCode = 1
		m.stop(true)
	default:
		m.log(slog.LevelError, "reload.failed", "reload failed", "err", e.err)
		m.failRoll(nil, "start_failed", e.err.Error(), "")
	}
}

func (m *machine) onReady(g *generation) {
	if !m.isNext(g) || g.state != starting {
		return
	}
	g.readyAt = m.now()
	m.log(slog.LevelInfo, "generation.ready", "generation ready", append(m.about(g), "ready_ms", g.readyAt.Sub(g.started).Milliseconds())...)
	// A process that replaces one shown hung does not bake: the old one
	// does not serve.
	if old := m.slots[g.w].cur; m.bake > 0 && old != nil && !old.unresponsive {
		g.state = baking
		m.log(slog.LevelInfo, "bake.started", "baking: the old generation serves on", append(m.about(g), "bake", m.bake.String())...)
		m.do(actAfter{m.bake, evBakeDone{g}}, actWatchBake{g, old, m.servingBut(g)})
		return
	}
	m.promote(g)
}

// servingBut returns the processes that serve beside g: the bake pauses
// them all for a moment to see g take connections alone.
func (m *machine) servingBut(g *generation) []*generation {
	var out []*generation
	for _, x := range m.gens {
		if x != g && (x.state == serving || x.state == baking) {
			out = append(out, x)
		}
	}
	return out
}

// onBakeFailed rolls back g, which bakes and was shown not to serve: it is
// stopped, and the generation it was to replace serves on.
func (m *machine) onBakeFailed(g *generation, reason string) {
	if !m.isNext(g) || g.state != baking || m.slots[g.w].cur == nil {
		return
	}
	g.failWhy = "failed its bake window: it " + reason
	m.log(slog.LevelError, "bake.failed", "new generation does not serve; rolling it back, the old one serves on", append(m.about(g), "serving", m.slots[g.w].cur.n, "reason", reason)...)
	m.drain(g)
	m.slots[g.w].next = nil
	why := fmt.Sprintf("%s %s", m.name(g), g.failWhy)
	m.failRoll(g, "bake_failed", why, "reload rolled back: "+why)
}

// name names process g in messages: "generation 3 (pid 1234)", with its
// worker index where there are several.
func (m *machine) name(g *generation) string {
	if m.workerCount() == 1 {
		return fmt.Sprintf("generation %d (pid %d)", g.n, g.pid)
	}
	return fmt.Sprintf("generation %d worker %d (pid %d)", g.n, g.w, g.pid)
}

// promote makes g serve in its worker's place and drains the process it
// replaces.
func (m *machine) promote(g *generation) {
	sl := &m.slots[g.w]
	old := sl.cur
	g.state, sl.cur, sl.next, sl.spec = serving, g, nil, g.spec
	if old != nil {
		m.drain(old)
	}
	if r := m.roll; r != nil && g.n == r.n {
		if r.back {
			r.putBack++
		} else {
			r.done = append(r.done, g.w)
		}
		if old != nil {
			r.draining[old] = true
			if _, ok := r.olds[g.w]; !ok {
				r.olds[g.w] = old.spec
			}
		}
		if r.kind == spawnFirst || len(r.todo) > 0 || m.inFlight(r)-len(r.draining) > 0 {
			m.advanceRoll()
			if m.roll == r && r.kind != spawnFirst {
				m.do(actNotify{"status", fmt.Sprintf("reloading: %d of %d workers of generation %d ready", len(r.done), len(m.slots), r.n)})
			}
			return
		}
		m.endRoll()
		return
	}
	m.do(actNotify{"status", m.servingStatus()})
	// A restart or a replacement took its place: a roll that waited for
	// this worker index goes on.
	m.advanceRoll()
}

// servingStatus says what serves, for systemd's STATUS=.
func (m *machine) servingStatus() string {
	if m.workerCount() == 1 {
		if g := m.slots[0].cur; g != nil {
			return fmt.Sprintf("serving generation %d (pid %d)", g.n, g.pid)
		}
		return "no generation serving"
	}
	ready, gens := 0, []string{}
	for _, sl := range m.slots {
		if sl.cur != nil {
			ready++
			if n := strconv.Itoa(sl.cur.n); !slices.Contains(gens, n) {
				gens = append(gens, n)
			}
		}
	}
	st := fmt.Sprintf("serving %d of %d workers (generation %s)", ready, len(m.slots), strings.Join(gens, ", "))
	for w, sl := range m.slots {
		if sl.crashes >= failingAfter {
			st += fmt.Sprintf("; worker %d keeps crashing (%d exits in a row)", w, sl.crashes)
		}
	}
	return st
}

// endRoll ends the roll under way: it reports how it went, and starts the
// reload queued meanwhile.
func (m *machine) endRoll() {
	r := m.roll
	m.roll = nil
	for old := range r.draining {
		delete(r.draining, old)
	}
	switch {
	case r.kind == spawnFirst:
		if m.phase == phaseStarting {
			m.phase = phaseServing
			m.do(actUpgraderReady{}, actNotify{"status", m.servingStatus()})
			m.armMemory()
		}
	case r.kind == spawnReplace && r.failure == "":
		if g := m.slots[r.done[0]].cur; g != nil {
			why := "memory"
			if r.hung {
				why = "unresponsive"
			}
			m.log(slog.LevelInfo, "worker.replaced", "worker replaced", append(m.about(g), "why", why)...)
		}
		m.do(actNotify{"status", m.servingStatus()})
	case r.kind == spawnReplace:
		m.log(slog.LevelWarn, "worker.replace_failed", "cannot replace the worker; it serves on", "reason", r.failure)
		if t := r.target; t != nil && t.unresponsive && t.state == serving {
			// Paused as hung: it is all there is at its index.
			t.unresponsive = false
			m.do(actPause{t, false})
		}
	case r.failure != "":
		msg := r.failure
		if r.back {
			msg += fmt.Sprintf("; put back the %s it had replaced", workersN(r.putBack))
			if r.backFailed > 0 {
				msg += fmt.Sprintf(" (%s could not be, and serve the new release)", workersN(r.backFailed))
			}
		}
		notify := r.notify
		if notify == "" {
			notify = fmt.Sprintf("reload failed: %s; serving generation %d", msg, m.first().n)
		} else if r.back {
			notify += "; workers put back"
		}
		m.do(actNotify{"ready", notify})
		if r.code == "rolled_back" {
			m.count("rolled_back", "", 0)
		} else {
			m.count("failed", r.code, 0)
		}
		m.finishReload(ReloadResult{Error: "reload failed: " + msg})
		m.do(actReply{r.rollbackWs, ReloadResult{OK: true, Generation: m.first().n, PID: m.first().pid}})
	default:
		// What the first worker replaced ran (a rollback's target).
		for w := range m.slots {
			if spec, ok := r.olds[w]; ok {
				m.previous = spec
				break
			}
		}
		m.do(actNotify{"ready", m.servingStatus()})
		took := m.now().Sub(m.reloadStart)
		res := ReloadResult{OK: true, Generation: r.n, Millis: took.Milliseconds()}
		// A new worker may have exited since it was ready (it restarts):
		// only those that serve are named.
		for _, sl := range m.slots {
			if sl.cur != nil {
				res.PIDs = append(res.PIDs, sl.cur.pid)
			}
		}
		if len(res.PIDs) > 0 {
			res.PID = res.PIDs[0]
		}
		if len(m.slots) == 1 {
			res.PIDs = nil
		}
		m.log(slog.LevelInfo, "reload.done", "reload done", "gen", r.n, "gen_pid", res.PID, "reload_ms", took.Milliseconds())
		m.count("ready", "", took)
		m.finishReload(res)
	}
	m.afterNext()
}

// failRoll stops the roll under way, which g (nil: its spawn) made fail
// for why; notify, if set, is what systemd is told. The workers it replaced
// are put back to what they ran before, each new one ready before the one
// it replaces drains; the reload fails once they are.
func (m *machine) failRoll(g *generation, code, why, notify string) {
	r := m.roll
	if r == nil {
		return
	}
	if r.back {
		// Putting back failed for this worker: the new release serves
		// there on.
		r.backFailed++
		w := -1
		if g != nil {
			w = g.w
		}
		m.log(slog.LevelError, "reload.put_back_failed", "cannot put this worker back; the new release serves there", "worker", w, "reason", why)
		m.advanceRoll()
		return
	}
	r.failure, r.code, r.notify, r.todo = why, code, notify, nil
	// The new processes stopped here count toward --max-surge until they
	// exit, as the old ones this roll drained do: the put-back waits for
	// room.
	if g != nil && g.state == draining {
		r.draining[g] = true
	}
	for w := range m.slots {
		if x := m.slots[w].next; x != nil && x != g && x.n == r.n {
			m.do(actCancelReady{x})
			m.drain(x)
			m.slots[w].next = nil
			r.draining[x] = true
		}
	}
	replaced := r.done
	if len(replaced) == 0 || r.kind == spawnReplace {
		m.endRoll()
		return
	}
	m.log(slog.LevelWarn, "reload.putting_back", "reload failed; putting back the workers already replaced", "workers", len(replaced), "reason", why)
	r.back, r.todo, r.n = true, slices.Clone(replaced), m.nextN
	m.nextN++
	m.advanceRoll()
}

// drain asks g to stop, and kills it after the drain timeout; past
// --max-draining generations draining, the oldest is killed at once.
func (m *machine) drain(g *generation) {
	g.state = draining
	if g.unresponsive {
		// Paused as hung: it must run to drain, or to die of its stop
		// signal.
		m.do(actPause{g, false})
	}
	g.exitedAt = m.now() // when the drain began, until it exits
	m.do(actSignal{g, m.stopSignal}, actAfter{m.drainTimeout, evKillDue{g}})
	m.log(slog.LevelInfo, "generation.draining", "draining", append(m.about(g), "signal", config.SignalName(m.stopSignal))...)
	var drainingGens []int // generation numbers, oldest first
	for _, d := range m.gens {
		if d.state == draining && !slices.Contains(drainingGens, d.n) {
			drainingGens = append(drainingGens, d.n)
		}
	}
	for i := 0; len(drainingGens)-i > m.maxDraining; i++ {
		for _, d := range m.gens {
			if d.state == draining && d.n == drainingGens[i] && !d.killed {
				m.log(slog.LevelWarn, "generation.too_many_draining", "too many generations draining (--max-draining); killing the oldest", append(m.about(d), "max", m.maxDraining)...)
				m.kill(d)
			}
		}
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
	how := launch.DescribeExit(err)
	var sl *slot
	if g.w < len(m.slots) {
		sl = &m.slots[g.w]
	}
	switch {
	case sl != nil && g == sl.next:
		sl.next = nil
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
		reason := fmt.Sprintf("%s %s", m.name(g), why)
		if lines := g.lastLines(); len(lines) > 0 {
			reason += "; it printed last: " + strings.Join(lines, " | ")
		}
		m.log(slog.LevelError, "generation.failed", "new generation failed", append(m.about(g), "reason", reason)...)
		r := m.roll
		switch {
		case m.stopping():
		case m.phase == phaseStarting && !g.restart:
			m.log(slog.LevelError, "program.failed", "the program failed at start; handoff exits", "reason", reason)
			m.exitCode = 1
			m.stop(true)
		case r != nil && g.n == r.n:
			code := "exited"
			switch {
			case prev == baking:
				code = "died_baking"
			case g.failWhy != "":
				code = "not_ready"
			}
			m.failRoll(g, code, reason, "")
		}
		if sl.cur == nil && sl.next == nil && !m.stopping() {
			m.scheduleRestart(g.w)
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
		if m.now().Sub(g.readyAt) >= stableAfter {
			sl.backoff, sl.crashes = 0, 0
		}
		sl.crashes++
		m.log(slog.LevelWarn, "generation.crashed", "generation exited on its own; restarting it", append(m.about(g), "status", how, "last_output", strings.Join(g.lastLines(), " | "))...)
		if sl.next == nil {
			m.scheduleRestart(g.w)
		}
	default:
		if m.counts.drainSec == nil {
			m.counts.drainSec = promtext.NewHistogram(drainBuckets...)
		}
		m.counts.drainSec.Observe(m.now().Sub(g.exitedAt).Seconds())
		m.log(slog.LevelInfo, "generation.exited", "generation exited", append(m.about(g), "status", how, "drain_ms", m.now().Sub(g.exitedAt).Milliseconds())...)
		if r := m.roll; r != nil && r.draining[g] {
			delete(r.draining, g)
			m.advanceRoll()
		}
	}
}

// failingAfter is how many exits in a row mark a worker as one that keeps
// crashing: said in the log, in status and in systemd's STATUS=.
const failingAfter = 5

// first returns the process serving at worker index 0 — the serving
// generation, as status, systemd's STATUS= and the metrics name it — or a
// zero generation (number and pid 0) when none serves there.
func (m *machine) first() *generation {
	if len(m.slots) == 0 || m.slots[0].cur == nil {
		return &generation{}
	}
	return m.slots[0].cur
}

// scheduleRestart restarts worker w after its backoff.
func (m *machine) scheduleRestart(w int) {
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
		m.do(actNotify{"status", m.servingStatus()})
	}
	m.do(actAfter{sl.backoff, evRestartDue{w}})
}

// armMemory starts the checks of --max-memory.
func (m *machine) armMemory() {
	if m.maxMemory > 0 && !m.measuring {
		m.measuring = true
		m.do(actAfter{memEvery, evMemTick{}})
	}
}

// memEvery is how often the workers' resident memory is checked against
// --max-memory.
const memEvery = time.Second

// onMemory replaces, alone, a worker whose resident memory passed
// --max-memory: a new one starts with what it runs, and it drains once that
// one is ready. One at a time, and not while a reload rolls.
func (m *machine) onMemory(rss map[*generation]int64) {
	defer m.armMemory()
	if m.roll != nil || m.stopping() || m.stops.Delaying() {
		return
	}
	for w := range m.slots {
		sl := &m.slots[w]
		g := sl.cur
		if g == nil || sl.next != nil || rss[g] <= m.maxMemory {
			continue
		}
		if g.forMemory && m.now().Sub(g.readyAt) < stableAfter {
			// Replaced for its memory, and over it again at once: the
			// program needs more than --max-memory. Replacing it again
			// would loop.
			if !sl.memWarned {
				sl.memWarned = true
				m.log(slog.LevelError, "worker.memory_too_low", "a worker replaced for its memory passed --max-memory again at once; it is left serving — raise --max-memory above what the program needs",
					append(m.about(g), "rss_bytes", rss[g], "max_bytes", m.maxMemory)...)
			}
			continue
		}
		sl.memWarned = false
		m.log(slog.LevelWarn, "worker.over_memory", "worker passed --max-memory; replacing it, a new one ready first",
			append(m.about(g), "rss_bytes", rss[g], "max_bytes", m.maxMemory)...)
		r := &roll{kind: spawnReplace, target: g, n: m.nextN, spec: g.spec, todo: []int{w}, surge: 1, olds: map[int]*runSpec{}, draining: map[*generation]bool{}}
		m.nextN++
		m.roll = r
		m.advanceRoll()
		return
	}
}

// askReload starts a reload, or queues one if a generation is already on its
// way. w, if not nil, receives the result.
func (m *machine) askReload(w chan<- ReloadResult) {
	if m.stopping() || m.stops.Delaying() {
		if m.stops.Delaying() {
			m.log(slog.LevelInfo, "reload.refused", "reload refused: stopping, after the stop delay")
		}
		if w != nil {
			m.do(actReply{[]chan<- ReloadResult{w}, ReloadResult{Error: "handoff is stopping"}})
		}
		return
	}
	if g := m.starting(); g != nil || m.roll != nil {
		if m.q.Enqueue(waiting(w)...) {
			n := m.nextN - 1
			if m.roll != nil {
				n = m.roll.n
			} else if g != nil {
				n = g.n
			}
			m.log(slog.LevelInfo, "reload.queued", "reload queued: a new generation is already starting", "gen", n)
		}
		return
	}
	m.q.Join(waiting(w)...)
	m.startReload()
}

// starting returns a process starting or baking to take a worker's place,
// or nil.
func (m *machine) starting() *generation {
	for _, sl := range m.slots {
		if sl.next != nil {
			return sl.next
		}
	}
	return nil
}

func (m *machine) startReload() {
	m.reloading = true
	m.reloadStart = m.now()
	m.do(actNotify{"reloading", fmt.Sprintf("reloading: starting generation %d", m.nextN)}, actNotify{"extend", ""})
	if !m.extending {
		// One chain of ticks, however many reloads follow one another.
		m.extending = true
		m.do(actAfter{lifecycle.ExtendEvery, evExtendTick{}})
	}
	r := m.newRoll(spawnReload)
	if m.rollingBack {
		r.spec = m.previous
	}
	m.advanceRoll()
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

// rollback stops a reload whose new workers bake, putting back the workers
// it replaced; otherwise it starts a generation from what the previous
// current generation ran, as a reload does.
func (m *machine) rollback(w chan<- ReloadResult) {
	reply := func(r ReloadResult) { m.do(actReply{[]chan<- ReloadResult{w}, r}) }
	var bakingG *generation
	for _, sl := range m.slots {
		if sl.next != nil && sl.next.state == baking && sl.cur != nil {
			bakingG = sl.next
		}
	}
	r := m.roll
	switch {
	case m.stopping() || m.stops.Delaying():
		reply(ReloadResult{Error: "handoff is stopping"})
	case bakingG != nil && r != nil && r.kind == spawnReload && !r.back:
		g := bakingG
		m.log(slog.LevelWarn, "rollback.stopping", "rollback: stopping the generation that bakes; the old one serves on", append(m.about(g), "serving", m.slots[g.w].cur.n)...)
		g.failWhy = "was rolled back during its bake window"
		m.drain(g)
		m.slots[g.w].next = nil
		r.rollbackWs = append(r.rollbackWs, w)
		why := fmt.Sprintf("%s was rolled back during its bake window", m.name(g))
		m.failRoll(g, "rolled_back", why, fmt.Sprintf("rolled back: serving generation %d (pid %d)", m.slots[g.w].cur.n, m.slots[g.w].cur.pid))
	case m.starting() != nil || r != nil:
		n := m.nextN - 1
		if r != nil {
			n = r.n
		}
		reply(ReloadResult{Error: fmt.Sprintf("generation %d is starting; roll back once it is ready (or failed)", n)})
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
	if m.roll != nil || m.starting() != nil || !m.q.Queued() || m.stopping() {
		return
	}
	m.q.Promote()
	m.log(slog.LevelInfo, "reload.dequeued", "starting the queued reload")
	m.startReload()
}

// stop asks every generation to stop; handoff exits once they have.
// real is false after handing over to a new handoff.
func (m *machine) stop(real bool) {
	if m.stopping() {
		return
	}
	// Closing, until it is known whether new connections are held back
	// first (below): either way the stop has begun.
	m.phase = phaseClosing
	m.killedBeforeStop = m.killed
	fail := ReloadResult{Error: "handoff is stopping"}
	if m.reloading {
		m.count("failed", "stopping", 0)
	}
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
	if r := m.roll; r != nil {
		m.do(actReply{r.rollbackWs, fail})
		m.roll = nil
	}
	for w := range m.slots {
		m.slots[w].next = nil
	}
	if real && slices.ContainsFunc(m.gens, func(g *generation) bool { return g.state != draining }) {
		// The generations serve on while the connections already queued
		// are taken; evDoorsClosed drains them.
		m.do(actCloseDoors{})
		return
	}
	m.phase = phaseStopping
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

// logDoors logs how the stop held new connections back.
func (m *machine) logDoors(e evDoorsClosed) {
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

func (m *machine) upgradeSelf() {
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
	m.do(actSelfUpgrade{m.nextN})
}

// workersN says "1 worker" or "N workers".
func workersN(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return fmt.Sprintf("%d workers", n)
}

// onUnresponsive replaces a serving process shown hung (liveness.go): it is
// paused at once, so that it takes no more connections — those it holds
// are lost to it — and a new process with what it ran takes its index; it
// drains once that one is ready, with no bake. One replacement at a time,
// and none while a reload rolls: the checks report it again meanwhile.
// A process that replaced one for the same and hangs within stableAfter of
// its start is said to once, and replaced only once it has served
// stableAfter: replacing it faster would not help a program that hangs on
// something outside it.
func (m *machine) onUnresponsive(e evUnresponsive) {
	g := e.g
	if g.w >= len(m.slots) {
		return
	}
	sl := &m.slots[g.w]
	if g.state != serving || sl.cur != g || sl.next != nil || g.unresponsive || m.roll != nil || m.stopping() || m.stops.Delaying() {
		return
	}
	if g.forHung && m.now().Sub(g.readyAt) < stableAfter {
		if !sl.hungWarned {
			sl.hungWarned = true
			m.log(slog.LevelError, "worker.unresponsive_again", "a process that replaced a hung one hangs too; it is replaced again once it has served 10s — look at what the program waits on",
				append(m.about(g), append([]any{"reason", e.reason}, e.args...)...)...)
		}
		return
	}
	sl.hungWarned = false
	g.unresponsive = true
	sl.unresponsive++
	m.counts.unresponsive++
	m.log(slog.LevelError, "worker.unresponsive", "process shown hung; pausing it and replacing it, a new one ready first",
		append(m.about(g), append([]any{"reason", e.reason}, e.args...)...)...)
	m.do(actPause{g, true})
	r := &roll{kind: spawnReplace, target: g, hung: true, n: m.nextN, spec: g.spec, todo: []int{g.w}, surge: 1, olds: map[int]*runSpec{}, draining: map[*generation]bool{}}
	m.nextN++
	m.roll = r
	m.advanceRoll()
}

// phase is the mode of the whole service. It only moves forward:
// starting → serving → (closing →) stopping; a stop may come in any.
type phase int

const (
	phaseStarting phase = iota // the first generation (every worker) is not ready yet
	phaseServing               // generations serve; reloads, restarts and replacements run
	phaseClosing               // a stop holds new connections back while the generations take the queued ones
	phaseStopping              // every generation drains; handoff exits once none is left
)

func (p phase) String() string {
	switch p {
	case phaseStarting:
		return "starting"
	case phaseServing:
		return "serving"
	case phaseClosing:
		return "closing"
	case phaseStopping:
		return "stopping"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// stopping reports whether a stop has begun (closing or stopping).
func (m *machine) stopping() bool { return m.phase >= phaseClosing }
