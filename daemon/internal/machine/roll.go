package machine

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
)

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
	target *gen.Gen
	hung   bool
	n      int       // the generation number of the processes it starts
	spec   *gen.Spec // what they run; nil until the first resolved it
	todo   []int     // worker indexes still to start, in order
	done   []int     // worker indexes replaced so far
	olds   map[int]*gen.Spec
	surge  int
	// spawning: an ActSpawn is on its way (one at a time, so that the
	// first resolves the spec the others run).
	spawning bool
	draining map[*gen.Gen]bool // old processes it drained that still run
	// back: putting back the workers replaced before failure, the reason
	// the reload fails, and what to tell systemd.
	back       bool
	failure    string
	code       string // the failure's reason, for --metrics
	notify     string
	putBack    int // workers put back
	backFailed int
	rollbackWs []chan<- gen.ReloadResult // rollbacks that stopped this roll, answered at its end
}

// spawnKind says why a generation is started.
type spawnKind int

const (
	spawnFirst   spawnKind = iota // handoff's start
	spawnReload                   // a reload or a rollback
	spawnReplace                  // a worker passed --max-memory, or was shown hung
)

// onBakeDone: g's bake window ended without a failed check: it takes over.
func (m *Machine) onBakeDone(g *gen.Gen) {
	if m.isNext(g) && g.State == gen.Baking {
		m.log(slog.LevelInfo, "bake.done", "bake window over", m.about(g)...)
		m.promote(g)
	}
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
	r := &roll{kind: kind, n: m.nextN, surge: max(m.surge, 1), olds: map[int]*gen.Spec{}, draining: map[*gen.Gen]bool{}}
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
		m.do(gen.ActSpawn{N: r.n, Spec: spec, W: w})
		return
	}
	if len(r.todo) == 0 && m.inFlight(r)-len(r.draining) == 0 {
		m.endRoll()
	}
}

func (m *Machine) onSpawned(g *gen.Gen) {
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
	m.log(slog.LevelInfo, "generation.started", "generation started", append(m.about(g), "restart", g.Restart, "launch", g.Launch,
		"prepare_us", g.Prepare.Microseconds(), "exec_us", g.Exec.Microseconds())...)
	m.advanceRoll()
}

func (m *Machine) onSpawnFailed(e gen.EvSpawnFailed) {
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

func (m *Machine) onReady(g *gen.Gen) {
	if !m.isNext(g) || g.State != gen.Starting {
		return
	}
	g.ReadyAt = m.now()
	m.log(slog.LevelInfo, "generation.ready", "generation ready", append(m.about(g), "ready_ms", g.ReadyAt.Sub(g.Started).Milliseconds())...)
	// A process that replaces one shown hung does not bake: the old one
	// does not serve.
	if old := m.slots[g.W].cur; m.bake > 0 && old != nil && !old.Unresponsive {
		g.State = gen.Baking
		m.log(slog.LevelInfo, "bake.started", "baking: the old generation serves on", append(m.about(g), "bake", m.bake.String())...)
		m.do(gen.ActAfter{D: m.bake, Ev: gen.EvBakeDone{G: g}}, gen.ActWatchBake{G: g, Old: old, Others: m.servingBut(g)})
		return
	}
	m.promote(g)
}

// servingBut returns the processes that serve beside g: the bake pauses
// them all for a moment to see g take connections alone.
func (m *Machine) servingBut(g *gen.Gen) []*gen.Gen {
	var out []*gen.Gen
	for _, x := range m.gens {
		if x != g && (x.State == gen.Serving || x.State == gen.Baking) {
			out = append(out, x)
		}
	}
	return out
}

// onBakeFailed rolls back g, which bakes and was shown not to serve: it is
// stopped, and the generation it was to replace serves on.
func (m *Machine) onBakeFailed(g *gen.Gen, reason string) {
	if !m.isNext(g) || g.State != gen.Baking || m.slots[g.W].cur == nil {
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
func (m *Machine) name(g *gen.Gen) string {
	if m.workerCount() == 1 {
		return fmt.Sprintf("generation %d (pid %d)", g.N, g.PID)
	}
	return fmt.Sprintf("generation %d worker %d (pid %d)", g.N, g.W, g.PID)
}

// promote makes g serve in its worker's place and drains the process it
// replaces.
func (m *Machine) promote(g *gen.Gen) {
	sl := &m.slots[g.W]
	old := sl.cur
	g.State, sl.cur, sl.next, sl.spec = gen.Serving, g, nil, g.Spec
	if m.handover {
		m.do(gen.ActHandOver{Old: old, New: g})
	}
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
				m.do(gen.ActNotify{Kind: "status", Status: fmt.Sprintf("reloading: %d of %d workers of generation %d ready", len(r.done), len(m.slots), r.n)})
			}
			return
		}
		m.endRoll()
		return
	}
	m.do(gen.ActNotify{Kind: "status", Status: m.servingStatus()})
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
			m.do(gen.ActUpgraderReady{}, gen.ActNotify{Kind: "status", Status: m.servingStatus()})
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
		m.do(gen.ActNotify{Kind: "status", Status: m.servingStatus()})
	case r.kind == spawnReplace:
		m.log(slog.LevelWarn, "worker.replace_failed", "cannot replace the worker; it serves on", "reason", r.failure)
		if t := r.target; t != nil && t.Unresponsive && t.State == gen.Serving {
			// Paused as hung: it is all there is at its index.
			t.Unresponsive = false
			m.do(gen.ActPause{G: t, Pause: false})
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
		m.do(gen.ActNotify{Kind: "ready", Status: notify})
		if r.code == "rolled_back" {
			m.count("rolled_back", "", 0)
		} else {
			m.count("failed", r.code, 0)
		}
		m.finishReload(gen.ReloadResult{Error: "reload failed: " + msg})
		m.do(gen.ActReply{WS: r.rollbackWs, R: gen.ReloadResult{OK: true, Generation: m.first().N, PID: m.first().PID}})
	default:
		// What the first worker replaced ran (a rollback's target).
		for w := range m.slots {
			if spec, ok := r.olds[w]; ok {
				m.previous = spec
				break
			}
		}
		m.do(gen.ActNotify{Kind: "ready", Status: m.servingStatus()})
		took := m.now().Sub(m.reloadStart)
		res := gen.ReloadResult{OK: true, Generation: r.n, Millis: took.Milliseconds()}
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
func (m *Machine) failRoll(g *gen.Gen, code, why, notify string) {
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
	if g != nil && g.State == gen.Draining {
		r.draining[g] = true
	}
	for w := range m.slots {
		if x := m.slots[w].next; x != nil && x != g && x.N == r.n {
			m.do(gen.ActCancelReady{G: x})
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
func (m *Machine) drain(g *gen.Gen) {
	g.State = gen.Draining
	if g.Unresponsive {
		// Paused as hung: it must run to drain, or to die of its stop
		// signal.
		m.do(gen.ActPause{G: g, Pause: false})
	}
	g.ExitedAt = m.now() // when the drain began, until it exits
	m.do(gen.ActSignal{G: g, Sig: m.stopSignal}, gen.ActAfter{D: m.drainTimeout, Ev: gen.EvKillDue{G: g}})
	m.log(slog.LevelInfo, "generation.draining", "draining", append(m.about(g), "signal", m.stopSignal)...)
	var drainingGens []int // generation numbers, oldest first
	for _, d := range m.gens {
		if d.State == gen.Draining && !slices.Contains(drainingGens, d.N) {
			drainingGens = append(drainingGens, d.N)
		}
	}
	for i := 0; len(drainingGens)-i > m.maxDraining; i++ {
		for _, d := range m.gens {
			if d.State == gen.Draining && d.N == drainingGens[i] && !d.Killed {
				m.log(slog.LevelWarn, "generation.too_many_draining", "too many generations draining (--max-draining); killing the oldest", append(m.about(d), "max", m.maxDraining)...)
				m.kill(d)
			}
		}
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

// workersN says "1 worker" or "N workers".
func workersN(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return fmt.Sprintf("%d workers", n)
}
