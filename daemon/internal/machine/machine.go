package machine

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// Machine is the supervisor's state: the generations, the reload under way
// and the one queued, the restart backoff and the stop. Its one transition
// function, Step, takes an event and returns the actions to carry out; it
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

	gens  []*gen.Gen // every process not exited, oldest first
	slots []slot     // one per worker index
	// roll is the reload, rollback, first start or replacement under way,
	// nil when none.
	roll  *roll
	nextN int
	// phase is the service's mode: starting, serving, closing, stopping.
	phase phase
	// previous is what the generation current before the current one ran:
	// what a rollback runs. A generation that failed never counts.
	previous *gen.Spec
	// rollingBack: the reload asked next runs previous.
	rollingBack bool

	reloading   bool
	extending   bool // an EvExtendTick is on its way
	reloadStart time.Time
	q           lifecycle.Queue[chan<- gen.ReloadResult] // who waits for the reload under way, and the one queued

	restarts int
	killed   int // generations killed with SIGKILL: not ready in time, hung, past the drain timeout or --max-draining, a second stop signal
	// killedBeforeStop is killed when the stop began.
	killedBeforeStop int
	stops            lifecycle.Stops // stop signals, and the stop delay
	exitCode         int
	selfUpgrade      bool
	measuring        bool // an EvMemTick is on its way

	handover bool // --handover
	// relays holds, for each relay under way (by its old process), the
	// connections it handed over, saw refused, and left to fall back.
	relays map[*gen.Gen]*[3]int
	counts counters // for --metrics
	out    []gen.Action
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
	watchReloads int                 // reloads asked by --watch
	// handover counts the connections relayed by outcome (see
	// View.Handover); handoverSec the relays that moved any, by how long
	// their connections took to move (EvRelayed.Took).
	handover    map[string]int
	handoverSec *promtext.Histogram
}

// reloadBuckets and drainBuckets are the histograms' upper bounds, in
// seconds.
var (
	reloadBuckets   = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
	drainBuckets    = []float64{0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
	handoverBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
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

// slot is one worker index of the service: the process serving there, the
// one starting to take its place, and its restart books.
type slot struct {
	cur  *gen.Gen  // serving; nil before its first start is ready, or after it exited
	next *gen.Gen  // starting or baking to take its place
	spec *gen.Spec // what its last worker ran: what a restart runs
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

func (m *Machine) do(a ...gen.Action) { m.out = append(m.out, a...) }

// log logs msg, with event, the record's stable key (see docs/daemon.md,
// "Log events"): what log shippers and tests match, whatever the wording.
func (m *Machine) log(level slog.Level, event, msg string, args ...any) {
	m.do(gen.ActLog{Level: level, Event: event, Msg: msg, Args: args})
}

// Step applies ev and returns the actions to carry out, in order.
func (m *Machine) Step(ev gen.Event) []gen.Action {
	m.out = nil
	switch e := ev.(type) {
	case gen.EvStart:
		m.start()
	case gen.EvSignal:
		m.onSignal(e.Sig)
	case gen.EvReload:
		m.log(slog.LevelInfo, "reload.asked", "reload asked", "by", "handoff reload")
		m.askReload(e.W)
	case gen.EvWatchChanged:
		m.counts.watchReloads++
		m.log(slog.LevelInfo, "reload.asked", "reload asked", "by", "watch", "paths", e.Paths)
		m.askReload(nil)
	case gen.EvRollback:
		m.rollback(e.W)
	case gen.EvSpawned:
		m.onSpawned(e.G)
	case gen.EvSpawnFailed:
		m.onSpawnFailed(e)
	case gen.EvHandedOver:
		m.onHandedOver()
	case gen.EvHung:
		m.onHung(e)
	case gen.EvReady:
		m.onReady(e.G)
	case gen.EvNotReady:
		m.onNotReady(e)
	case gen.EvLeft:
		m.onLeft(e)
	case gen.EvExited:
		m.onExit(e)
	case gen.EvBakeDone:
		m.onBakeDone(e.G)
	case gen.EvBakeFailed:
		m.onBakeFailed(e.G, e.Reason)
	case gen.EvUnresponsive:
		m.onUnresponsive(e)
	case gen.EvKillDue:
		m.onKillDue(e.G)
	case gen.EvRestartDue:
		m.onRestartDue(e.W)
	case gen.EvMemTick:
		m.onMemTick()
	case gen.EvMemSample:
		m.onMemory(e.RSS)
	case gen.EvExtendTick:
		m.onExtendTick()
	case gen.EvDoorsClosed:
		m.onDoorsClosed(e)
	case gen.EvStopDelayOver:
		m.onStopDelayOver()
	case gen.EvSelfUpgradeDone:
		m.onSelfUpgradeDone(e.Err)
	case gen.EvRelayed:
		m.onRelayed(e)
	}
	if m.stopping() && len(m.gens) == 0 {
		m.done()
	}
	return m.out
}

// workerCount returns the number of workers per generation.
func (m *Machine) workerCount() int { return max(m.workers, 1) }

// about returns the log attributes that name process g: its generation and
// pid, and its worker index where there are several.
func (m *Machine) about(g *gen.Gen) []any {
	if m.workerCount() == 1 {
		return []any{"gen", g.N, "gen_pid", g.PID}
	}
	return []any{"gen", g.N, "worker", g.W, "gen_pid", g.PID}
}

// isNext reports whether g is starting or baking to take a worker's place.
func (m *Machine) isNext(g *gen.Gen) bool {
	return g.W < len(m.slots) && m.slots[g.W].next == g
}

// first returns the process serving at worker index 0 — the serving
// generation, as status, systemd's STATUS= and the metrics name it — or a
// zero generation (number and pid 0) when none serves there.
func (m *Machine) first() *gen.Gen {
	if len(m.slots) == 0 || m.slots[0].cur == nil {
		return &gen.Gen{}
	}
	return m.slots[0].cur
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
