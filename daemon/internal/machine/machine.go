//go:build linux

package machine

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// Machine is the supervisor's state: the generations, the reload under way
// and the one queued, the restart backoff and the stop. Its one transition
// function, step, takes an event and returns the actions to carry out; it
// does no I/O, so that tests drive it in-process. The supervisor's goroutine
// turns what happens into events and the actions into calls.
type Machine struct {
	bake         time.Duration
	maxDraining  int
	readyTimeout time.Duration
	drainTimeout time.Duration
	stopSignal   string // its name: SIGTERM
	pid1         bool   // handoff is PID 1: it must not upgrade itself
	now          func() time.Time
	workers      int   // processes per generation (--workers); 0 means 1
	surge        int   // processes a roll may run beyond workers (--max-surge); 0 means 1
	maxMemory    int64 // a worker's resident memory past which it is replaced (--max-memory); 0: never

	gens  []*Gen // every process not exited, oldest first
	slots []slot // one per worker index
	// roll is the reload, rollback, first start or replacement under way,
	// nil when none.
	roll  *roll
	nextN int
	// phase is the service's mode: starting, serving, closing, stopping.
	phase phase
	// previous is what the generation current before the current one ran:
	// what a rollback runs. A generation that failed never counts.
	previous *Spec
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
	out    []Action
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
func (m *Machine) count(outcome, reason string, took time.Duration) {
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
	cur  *Gen  // serving; nil before its first start is ready, or after it exited
	next *Gen  // starting or baking to take its place
	spec *Spec // what its last worker ran: what a restart runs
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
	target *Gen
	hung   bool
	n      int   // the generation number of the processes it starts
	spec   *Spec // what they run; nil until the first resolved it
	todo   []int // worker indexes still to start, in order
	done   []int // worker indexes replaced so far
	olds   map[int]*Spec
	surge  int
	// spawning: an actSpawn is on its way (one at a time, so that the
	// first resolves the spec the others run).
	spawning bool
	draining map[*Gen]bool // old processes it drained that still run
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

func (m *Machine) do(a ...Action) { m.out = append(m.out, a...) }

// kill sends g SIGKILL, once, and counts it.
func (m *Machine) kill(g *Gen) {
	if !g.Killed {
		g.Killed = true
		m.killed++
	}
	m.do(ActSignal{g, "SIGKILL"})
}

// log logs msg, with event, the record's stable key (see docs/daemon.md,
// "Log events"): what log shippers and tests match, whatever the wording.
func (m *Machine) log(level slog.Level, event, msg string, args ...any) {
	m.do(ActLog{level, event, msg, args})
}

// Step applies ev and returns the actions to carry out, in order.
func (m *Machine) Step(ev Event) []Action {
	m.out = nil
	switch e := ev.(type) {
	case EvStart:
		m.start()
	case EvSignal:
		m.onSignal(e.Sig)
	case EvReload:
		m.log(slog.LevelInfo, "reload.asked", "reload asked", "by", "handoff reload")
		m.askReload(e.W)
	case EvRollback:
		m.log(slog.LevelInfo, "rollback.asked", "rollback asked", "by", "handoff rollback")
		m.rollback(e.W)
	case EvSpawned:
		m.onSpawned(e.G)
	case EvSpawnFailed:
		m.onSpawnFailed(e)
	case EvHandedOver:
		m.log(slog.LevelInfo, "upgrade.done", "handed over to the new handoff; stopping this one's generations")
		m.stop(false)
	case EvHung:
		e.G.Hung = true
		m.log(slog.LevelError, "generation.hung", "generation hung: no WATCHDOG=1 within WatchdogSec; killing it", append(m.about(e.G), "quiet", e.Quiet.Round(time.Millisecond).String())...)
		m.do(ActSignal{e.G, "SIGABRT"}, ActAfter{time.Second, EvKillDue{e.G}})
	case EvReady:
		m.onReady(e.G)
	case EvNotReady:
		if m.isNext(e.G) && e.G.State == Starting {
			e.G.FailWhy = fmt.Sprintf("was not ready within %v (--ready-timeout)", m.readyTimeout)
			if e.Why != "" {
				e.G.FailWhy += ": " + e.Why
			}
			m.log(slog.LevelWarn, "generation.not_ready", "generation not ready in time; killing it", m.about(e.G)...)
			m.kill(e.G)
		}
	case EvLeft:
		e.G.Left = e.Strays
		m.log(slog.LevelWarn, "generation.strays", "generation left processes behind; stopping them", append(m.about(e.G), "left", StrayList(e.Strays))...)
		m.do(ActStopStrays{e.Strays})
	case EvExited:
		m.onExit(e)
	case EvBakeDone:
		if m.isNext(e.G) && e.G.State == Baking {
			m.log(slog.LevelInfo, "bake.done", "bake window over", m.about(e.G)...)
			m.promote(e.G)
		}
	case EvBakeFailed:
		m.onBakeFailed(e.G, e.Reason)
	case EvUnresponsive:
		m.onUnresponsive(e)
	case EvKillDue:
		if e.G.State != Exited {
			m.log(slog.LevelWarn, "generation.drain_timeout", "generation did not exit within the drain timeout; killing it", append(m.about(e.G), "drain_timeout", m.drainTimeout.String())...)
			m.counts.drainsKilled++
			m.kill(e.G)
		}
	case EvRestartDue:
		if sl := &m.slots[e.W]; !m.stopping() && sl.cur == nil && sl.next == nil {
			m.restarts++
			sl.restarts++
			spec := sl.spec
			if m.workerCount() == 1 {
				spec = nil // one worker: a restart runs what the configuration says now
			}
			m.do(ActSpawn{m.nextN, spec, e.W})
		}
	case EvMemTick:
		m.measuring = false
		if !m.stopping() && m.maxMemory > 0 {
			m.do(ActMeasure{})
		}
	case EvMemSample:
		m.onMemory(e.RSS)
	case EvExtendTick:
		m.extending = m.reloading
		if m.reloading {
			m.do(ActNotify{"extend", ""}, ActAfter{lifecycle.ExtendEvery, EvExtendTick{}})
		}
	case EvDoorsClosed:
		if m.phase == phaseClosing {
			m.phase = phaseStopping
			m.logDoors(e)
			m.drainAll(true)
		}
	case EvStopDelayOver:
		if m.stops.DelayOver() {
			m.log(slog.LevelInfo, "stop.delay_over", "stop delay over; stopping every generation")
			m.stop(true)
		}
	case EvSelfUpgradeDone:
		m.selfUpgrade = false
		m.do(ActSelfUpgradeEnded{})
		if e.Err != nil {
			m.log(slog.LevelError, "upgrade.failed", "handoff upgrade failed; this handoff keeps running", "err", e.Err)
		}
	}
	if m.stopping() && len(m.gens) == 0 {
		code := m.exitCode
		if code == 0 && m.killed > m.killedBeforeStop {
			// The stop had to kill: an orchestrator must tell it from a
			// clean one.
			code = ExitStopCut
		}
		m.do(ActDone{code})
	}
	return m.out
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
			m.do(ActNotify{"stopping", fmt.Sprintf("stopping in %v (stop delay)", d)}, ActAfter{d, EvStopDelayOver{}})
			fail := ReloadResult{Error: "handoff is stopping"}
			m.finishReload(fail)
			m.do(ActReply{m.q.Drop(), fail})
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

// workerCount returns the number of workers per generation.
func (m *Machine) workerCount() int { return max(m.workers, 1) }

// about returns the log attributes that name process g: its generation and
// pid, and its worker index where there are several.
func (m *Machine) about(g *Gen) []any {
	if m.workerCount() == 1 {
		return []any{"gen", g.N, "gen_pid", g.PID}
	}
	return []any{"gen", g.N, "worker", g.W, "gen_pid", g.PID}
}

// isNext reports whether g is starting or baking to take a worker's place.
func (m *Machine) isNext(g *Gen) bool {
	return g.W < len(m.slots) && m.slots[g.W].next == g
}

// start begins handoff's first generation: every worker at once.
func (m *Machine) start() {
	m.slots = make([]slot, m.workerCount())
	r := m.newRoll(spawnFirst)
	r.surge = len(m.slots)
	m.advanceRoll()
}

// newRoll begins a roll over every worker index, under a new generation
// number.
func (m *Machine) newRoll(kind spawnKind) *roll {
	r := &roll{kind: kind, n: m.nextN, surge: max(m.surge, 1), olds: map[int]*Spec{}, draining: map[*Gen]bool{}}
	m.nextN++
	for w := range m.slots {
		r.todo = append(r.todo, w)
	}
	m.roll = r
	return r
}

// inFlight counts the processes the roll r runs beyond the workers: its new
// ones starting or baking, and the old ones it drained that still run.
func (m *Machine) inFlight(r *roll) int {
	n := len(r.draining)
	for _, sl := range m.slots {
		if sl.next != nil && sl.next.N == r.n {
			n++
		}
	}
	return n
}

// advanceRoll starts the roll's next process if it may, and ends the roll
// once every worker index is done and nothing it started is on its way.
func (m *Machine) advanceRoll() {
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
		m.do(ActSpawn{r.n, spec, w})
		return
	}
	if len(r.todo) == 0 && m.inFlight(r)-len(r.draining) == 0 {
		m.endRoll()
	}
}

func (m *Machine) onSpawned(g *Gen) {
	r := m.roll
	if r != nil && r.spawning && g.N == r.n {
		r.spawning = false
		g.ForMemory = r.kind == spawnReplace && !r.hung
		g.ForHung = r.kind == spawnReplace && r.hung
		if r.spec == nil && !r.back {
			r.spec = g.Spec
		}
		g.Restart = false
	} else {
		// A restart.
		g.Restart = true
		if g.N == m.nextN {
			m.nextN++
		}
	}
	m.gens = append(m.gens, g)
	m.slots[g.W].next = g
	m.log(slog.LevelInfo, "generation.started", "generation started", append(m.about(g), "restart", g.Restart, "launch", g.Launch)...)
	m.advanceRoll()
}

func (m *Machine) onSpawnFailed(e EvSpawnFailed) {
	r := m.roll
	if r == nil || !r.spawning || e.N != r.n {
		m.log(slog.LevelError, "restart.failed", "cannot restart the program", "err", e.Err)
		m.scheduleRestart(e.W)
		return
	}
	r.spawning = false
	switch r.kind {
	case spawnFirst:
		// The workers already started are stopped before handoff exits.
		m.log(slog.LevelError, "start.failed", "cannot start the program", "err", e.Err)
		m.exitCode = 1
		m.stop(true)
	default:
		m.log(slog.LevelError, "reload.failed", "reload failed", "err", e.Err)
		m.failRoll(nil, "start_failed", e.Err.Error(), "")
	}
}

func (m *Machine) onReady(g *Gen) {
	if !m.isNext(g) || g.State != Starting {
		return
	}
	g.ReadyAt = m.now()
	m.log(slog.LevelInfo, "generation.ready", "generation ready", append(m.about(g), "ready_ms", g.ReadyAt.Sub(g.Started).Milliseconds())...)
	// A process that replaces one shown hung does not bake: the old one
	// does not serve.
	if old := m.slots[g.W].cur; m.bake > 0 && old != nil && !old.Unresponsive {
		g.State = Baking
		m.log(slog.LevelInfo, "bake.started", "baking: the old generation serves on", append(m.about(g), "bake", m.bake.String())...)
		m.do(ActAfter{m.bake, EvBakeDone{g}}, ActWatchBake{g, old, m.servingBut(g)})
		return
	}
	m.promote(g)
}

// servingBut returns the processes that serve beside g: the bake pauses
// them all for a moment to see g take connections alone.
func (m *Machine) servingBut(g *Gen) []*Gen {
	var out []*Gen
	for _, x := range m.gens {
		if x != g && (x.State == Serving || x.State == Baking) {
			out = append(out, x)
		}
	}
	return out
}

// onBakeFailed rolls back g, which bakes and was shown not to serve: it is
// stopped, and the generation it was to replace serves on.
func (m *Machine) onBakeFailed(g *Gen, reason string) {
	if !m.isNext(g) || g.State != Baking || m.slots[g.W].cur == nil {
		return
	}
	g.FailWhy = "failed its bake window: it " + reason
	m.log(slog.LevelError, "bake.failed", "new generation does not serve; rolling it back, the old one serves on", append(m.about(g), "serving", m.slots[g.W].cur.N, "reason", reason)...)
	m.drain(g)
	m.slots[g.W].next = nil
	why := fmt.Sprintf("%s %s", m.name(g), g.FailWhy)
	m.failRoll(g, "bake_failed", why, "reload rolled back: "+why)
}

// name names process g in messages: "generation 3 (pid 1234)", with its
// worker index where there are several.
func (m *Machine) name(g *Gen) string {
	if m.workerCount() == 1 {
		return fmt.Sprintf("generation %d (pid %d)", g.N, g.PID)
	}
	return fmt.Sprintf("generation %d worker %d (pid %d)", g.N, g.W, g.PID)
}

// promote makes g serve in its worker's place and drains the process it
// replaces.
func (m *Machine) promote(g *Gen) {
	sl := &m.slots[g.W]
	old := sl.cur
	g.State, sl.cur, sl.next, sl.spec = Serving, g, nil, g.Spec
	if old != nil {
		m.drain(old)
	}
	if r := m.roll; r != nil && g.N == r.n {
		if r.back {
			r.putBack++
		} else {
			r.done = append(r.done, g.W)
		}
		if old != nil {
			r.draining[old] = true
			if _, ok := r.olds[g.W]; !ok {
				r.olds[g.W] = old.Spec
			}
		}
		if r.kind == spawnFirst || len(r.todo) > 0 || m.inFlight(r)-len(r.draining) > 0 {
			m.advanceRoll()
			if m.roll == r && r.kind != spawnFirst {
				m.do(ActNotify{"status", fmt.Sprintf("reloading: %d of %d workers of generation %d ready", len(r.done), len(m.slots), r.n)})
			}
			return
		}
		m.endRoll()
		return
	}
	m.do(ActNotify{"status", m.servingStatus()})
	// A restart or a replacement took its place: a roll that waited for
	// this worker index goes on.
	m.advanceRoll()
}

// servingStatus says what serves, for systemd's STATUS=.
func (m *Machine) servingStatus() string {
	if m.workerCount() == 1 {
		if g := m.slots[0].cur; g != nil {
			return fmt.Sprintf("serving generation %d (pid %d)", g.N, g.PID)
		}
		return "no generation serving"
	}
	ready, gens := 0, []string{}
	for _, sl := range m.slots {
		if sl.cur != nil {
			ready++
			if n := strconv.Itoa(sl.cur.N); !slices.Contains(gens, n) {
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
func (m *Machine) endRoll() {
	r := m.roll
	m.roll = nil
	for old := range r.draining {
		delete(r.draining, old)
	}
	switch {
	case r.kind == spawnFirst:
		if m.phase == phaseStarting {
			m.phase = phaseServing
			m.do(ActUpgraderReady{}, ActNotify{"status", m.servingStatus()})
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
		m.do(ActNotify{"status", m.servingStatus()})
	case r.kind == spawnReplace:
		m.log(slog.LevelWarn, "worker.replace_failed", "cannot replace the worker; it serves on", "reason", r.failure)
		if t := r.target; t != nil && t.Unresponsive && t.State == Serving {
			// Paused as hung: it is all there is at its index.
			t.Unresponsive = false
			m.do(ActPause{t, false})
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
			notify = fmt.Sprintf("reload failed: %s; serving generation %d", msg, m.first().N)
		} else if r.back {
			notify += "; workers put back"
		}
		m.do(ActNotify{"ready", notify})
		if r.code == "rolled_back" {
			m.count("rolled_back", "", 0)
		} else {
			m.count("failed", r.code, 0)
		}
		m.finishReload(ReloadResult{Error: "reload failed: " + msg})
		m.do(ActReply{r.rollbackWs, ReloadResult{OK: true, Generation: m.first().N, PID: m.first().PID}})
	default:
		// What the first worker replaced ran (a rollback's target).
		for w := range m.slots {
			if spec, ok := r.olds[w]; ok {
				m.previous = spec
				break
			}
		}
		m.do(ActNotify{"ready", m.servingStatus()})
		took := m.now().Sub(m.reloadStart)
		res := ReloadResult{OK: true, Generation: r.n, Millis: took.Milliseconds()}
		// A new worker may have exited since it was ready (it restarts):
		// only those that serve are named.
		for _, sl := range m.slots {
			if sl.cur != nil {
				res.PIDs = append(res.PIDs, sl.cur.PID)
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
func (m *Machine) failRoll(g *Gen, code, why, notify string) {
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
			w = g.W
		}
		m.log(slog.LevelError, "reload.put_back_failed", "cannot put this worker back; the new release serves there", "worker", w, "reason", why)
		m.advanceRoll()
		return
	}
	r.failure, r.code, r.notify, r.todo = why, code, notify, nil
	// The new processes stopped here count toward --max-surge until they
	// exit, as the old ones this roll drained do: the put-back waits for
	// room.
	if g != nil && g.State == Draining {
		r.draining[g] = true
	}
	for w := range m.slots {
		if x := m.slots[w].next; x != nil && x != g && x.N == r.n {
			m.do(ActCancelReady{x})
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
func (m *Machine) drain(g *Gen) {
	g.State = Draining
	if g.Unresponsive {
		// Paused as hung: it must run to drain, or to die of its stop
		// signal.
		m.do(ActPause{g, false})
	}
	g.ExitedAt = m.now() // when the drain began, until it exits
	m.do(ActSignal{g, m.stopSignal}, ActAfter{m.drainTimeout, EvKillDue{g}})
	m.log(slog.LevelInfo, "generation.draining", "draining", append(m.about(g), "signal", m.stopSignal)...)
	var drainingGens []int // generation numbers, oldest first
	for _, d := range m.gens {
		if d.State == Draining && !slices.Contains(drainingGens, d.N) {
			drainingGens = append(drainingGens, d.N)
		}
	}
	for i := 0; len(drainingGens)-i > m.maxDraining; i++ {
		for _, d := range m.gens {
			if d.State == Draining && d.N == drainingGens[i] && !d.Killed {
				m.log(slog.LevelWarn, "generation.too_many_draining", "too many generations draining (--max-draining); killing the oldest", append(m.about(d), "max", m.maxDraining)...)
				m.kill(d)
			}
		}
	}
}

func (m *Machine) onExit(e EvExited) {
	g, err := e.G, e.Err
	prev := g.State
	g.State = Exited
	m.do(ActRelease{g})
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
				"(nginx: 'daemon off;', memcached: without -d, gunicorn: without --daemon, else its --foreground or --no-daemon option)", StrayList(g.Left))
		}
		if why == "" && prev == Baking {
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
			case prev == Baking:
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
		if m.counts.drainSec == nil {
			m.counts.drainSec = promtext.NewHistogram(drainBuckets...)
		}
		m.counts.drainSec.Observe(m.now().Sub(g.ExitedAt).Seconds())
		m.log(slog.LevelInfo, "generation.exited", "generation exited", append(m.about(g), "status", how, "drain_ms", m.now().Sub(g.ExitedAt).Milliseconds())...)
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
func (m *Machine) first() *Gen {
	if len(m.slots) == 0 || m.slots[0].cur == nil {
		return &Gen{}
	}
	return m.slots[0].cur
}

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
		m.do(ActNotify{"status", m.servingStatus()})
	}
	m.do(ActAfter{sl.backoff, EvRestartDue{w}})
}

// armMemory starts the checks of --max-memory.
func (m *Machine) armMemory() {
	if m.maxMemory > 0 && !m.measuring {
		m.measuring = true
		m.do(ActAfter{memEvery, EvMemTick{}})
	}
}

// memEvery is how often the workers' resident memory is checked against
// --max-memory.
const memEvery = time.Second

// onMemory replaces, alone, a worker whose resident memory passed
// --max-memory: a new one starts with what it runs, and it drains once that
// one is ready. One at a time, and not while a reload rolls.
func (m *Machine) onMemory(rss map[*Gen]int64) {
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
		if g.ForMemory && m.now().Sub(g.ReadyAt) < stableAfter {
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
		r := &roll{kind: spawnReplace, target: g, n: m.nextN, spec: g.Spec, todo: []int{w}, surge: 1, olds: map[int]*Spec{}, draining: map[*Gen]bool{}}
		m.nextN++
		m.roll = r
		m.advanceRoll()
		return
	}
}

// askReload starts a reload, or queues one if a generation is already on its
// way. w, if not nil, receives the result.
func (m *Machine) askReload(w chan<- ReloadResult) {
	if m.stopping() || m.stops.Delaying() {
		if m.stops.Delaying() {
			m.log(slog.LevelInfo, "reload.refused", "reload refused: stopping, after the stop delay")
		}
		if w != nil {
			m.do(ActReply{[]chan<- ReloadResult{w}, ReloadResult{Error: "handoff is stopping"}})
		}
		return
	}
	if g := m.starting(); g != nil || m.roll != nil {
		if m.q.Enqueue(waiting(w)...) {
			n := m.nextN - 1
			if m.roll != nil {
				n = m.roll.n
			} else if g != nil {
				n = g.N
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
func (m *Machine) starting() *Gen {
	for _, sl := range m.slots {
		if sl.next != nil {
			return sl.next
		}
	}
	return nil
}

func (m *Machine) startReload() {
	m.reloading = true
	m.reloadStart = m.now()
	m.do(ActNotify{"reloading", fmt.Sprintf("reloading: starting generation %d", m.nextN)}, ActNotify{"extend", ""})
	if !m.extending {
		// One chain of ticks, however many reloads follow one another.
		m.extending = true
		m.do(ActAfter{lifecycle.ExtendEvery, EvExtendTick{}})
	}
	r := m.newRoll(spawnReload)
	if m.rollingBack {
		r.spec = m.previous
	}
	m.advanceRoll()
}

func (m *Machine) finishReload(r ReloadResult) {
	m.do(ActReply{m.q.Finish(), r})
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
func (m *Machine) rollback(w chan<- ReloadResult) {
	reply := func(r ReloadResult) { m.do(ActReply{[]chan<- ReloadResult{w}, r}) }
	var bakingG *Gen
	for _, sl := range m.slots {
		if sl.next != nil && sl.next.State == Baking && sl.cur != nil {
			bakingG = sl.next
		}
	}
	r := m.roll
	switch {
	case m.stopping() || m.stops.Delaying():
		reply(ReloadResult{Error: "handoff is stopping"})
	case bakingG != nil && r != nil && r.kind == spawnReload && !r.back:
		g := bakingG
		m.log(slog.LevelWarn, "rollback.stopping", "rollback: stopping the generation that bakes; the old one serves on", append(m.about(g), "serving", m.slots[g.W].cur.N)...)
		g.FailWhy = "was rolled back during its bake window"
		m.drain(g)
		m.slots[g.W].next = nil
		r.rollbackWs = append(r.rollbackWs, w)
		why := fmt.Sprintf("%s was rolled back during its bake window", m.name(g))
		m.failRoll(g, "rolled_back", why, fmt.Sprintf("rolled back: serving generation %d (pid %d)", m.slots[g.W].cur.N, m.slots[g.W].cur.PID))
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
func (m *Machine) afterNext() {
	if m.roll != nil || m.starting() != nil || !m.q.Queued() || m.stopping() {
		return
	}
	m.q.Promote()
	m.log(slog.LevelInfo, "reload.dequeued", "starting the queued reload")
	m.startReload()
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
	fail := ReloadResult{Error: "handoff is stopping"}
	if m.reloading {
		m.count("failed", "stopping", 0)
	}
	m.finishReload(fail)
	m.do(ActReply{m.q.Drop(), fail})
	if real {
		m.do(ActNotify{"stopping", "stopping every generation"})
		if m.selfUpgrade {
			// A new handoff is starting: have the upgrader kill it, or
			// it would take over after this one stopped.
			m.do(ActUpgraderStop{})
		}
	}
	if r := m.roll; r != nil {
		m.do(ActReply{r.rollbackWs, fail})
		m.roll = nil
	}
	for w := range m.slots {
		m.slots[w].next = nil
	}
	if real && slices.ContainsFunc(m.gens, func(g *Gen) bool { return g.State != Draining }) {
		// The generations serve on while the connections already queued
		// are taken; evDoorsClosed drains them.
		m.do(ActCloseDoors{})
		return
	}
	m.phase = phaseStopping
	m.drainAll(real)
}

// drainAll has every generation that is not draining yet drain; real, it
// then releases handoff's copies of the sockets.
func (m *Machine) drainAll(real bool) {
	for _, g := range m.gens {
		if g.State != Draining && !g.Killed {
			m.do(ActCancelReady{g})
			m.drain(g)
		}
	}
	if real {
		// From here the sockets live as long as a generation holds them:
		// once none accepts, a connection is refused, not queued and reset.
		m.do(ActReleaseSockets{})
	}
}

// logDoors logs how the stop held new connections back.
func (m *Machine) logDoors(e EvDoorsClosed) {
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
	m.do(ActSelfUpgrade{m.nextN})
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
func (m *Machine) onUnresponsive(e EvUnresponsive) {
	g := e.G
	if g.W >= len(m.slots) {
		return
	}
	sl := &m.slots[g.W]
	if g.State != Serving || sl.cur != g || sl.next != nil || g.Unresponsive || m.roll != nil || m.stopping() || m.stops.Delaying() {
		return
	}
	if g.ForHung && m.now().Sub(g.ReadyAt) < stableAfter {
		if !sl.hungWarned {
			sl.hungWarned = true
			m.log(slog.LevelError, "worker.unresponsive_again", "a process that replaced a hung one hangs too; it is replaced again once it has served 10s — look at what the program waits on",
				append(m.about(g), append([]any{"reason", e.Reason}, e.Args...)...)...)
		}
		return
	}
	sl.hungWarned = false
	g.Unresponsive = true
	sl.unresponsive++
	m.counts.unresponsive++
	m.log(slog.LevelError, "worker.unresponsive", "process shown hung; pausing it and replacing it, a new one ready first",
		append(m.about(g), append([]any{"reason", e.Reason}, e.Args...)...)...)
	m.do(ActPause{g, true})
	r := &roll{kind: spawnReplace, target: g, hung: true, n: m.nextN, spec: g.Spec, todo: []int{g.W}, surge: 1, olds: map[int]*Spec{}, draining: map[*Gen]bool{}}
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
func (m *Machine) stopping() bool { return m.phase >= phaseClosing }
