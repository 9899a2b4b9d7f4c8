package machine

import (
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// Options configure a Machine: what `handoff run` was given.
type Options struct {
	Bake         time.Duration // --bake; 0: none
	MaxDraining  int           // --max-draining
	ReadyTimeout time.Duration // --ready-timeout
	DrainTimeout time.Duration // --drain-timeout
	StopSignal   string        // --stop-signal, by name: SIGTERM
	StopDelay    time.Duration // --stop-delay
	Workers      int           // --workers; 0 means 1
	MaxSurge     int           // --max-surge; 0 means 1
	MaxMemory    int64         // --max-memory, in bytes; 0: none
	// Handover: --handover; promote says ActHandOver.
	Handover bool
	// PID1: handoff is PID 1, and must not upgrade itself.
	PID1 bool
	// First numbers the first generation (a new handoff on SIGUSR2 goes on
	// from the old one's).
	First int
}

// New returns the machine for o, before its first event (EvStart).
func New(o Options) *Machine {
	return &Machine{bake: o.Bake, maxDraining: o.MaxDraining, readyTimeout: o.ReadyTimeout, drainTimeout: o.DrainTimeout,
		stopSignal: o.StopSignal, stops: lifecycle.Stops{Delay: o.StopDelay}, workers: o.Workers, surge: o.MaxSurge,
		maxMemory: o.MaxMemory, pid1: o.PID1, handover: o.Handover, nextN: o.First, now: time.Now,
		counts: counters{handover: handoverCounts(o.Handover)}}
}

// View is what the machine shows of itself to `handoff status` and the
// metrics. Its pointers are the machine's own: read them in the goroutine
// that steps the machine, before the next step.
type View struct {
	Gens    []*gen.Gen // every process not exited, oldest first
	Workers []Worker   // one per worker index
	// Restarts counts the restarts of workers that exited on their own;
	// Killed the processes sent SIGKILL; Unresponsive those replaced as
	// hung; DrainsKilled those killed at --drain-timeout.
	Restarts, Killed, Unresponsive, DrainsKilled int
	Reloading                                    bool // a reload or rollback is under way
	Queued                                       bool // another is queued after it
	// Handover counts, with --handover, the connections offered from one
	// process to the one replacing it, by outcome: "handed_over" (committed
	// to the new process, which adopted them), "refused" (the new one said
	// no: the old one drains them), "fallback" (passed through handoff and
	// aborted before their commit: the old one drains them; those it could
	// not send before the abort never reach handoff). nil without
	// --handover.
	Handover map[string]int
	// Rolling: a reload, rollback or replacement of workers is under way
	// (not the first start).
	Rolling  bool
	Rollback *gen.Spec // what a rollback would run; nil: nothing to roll back to
	// Current is the process serving at worker index 0, or nil.
	Current *gen.Gen
	// Reloads counts reloads by outcome ("ready", "failed",
	// "rolled_back") and, for "failed", reason.
	Reloads map[[2]string]int
	// WatchReloads counts the reloads --watch asked for (each change seen;
	// one asked during another is queued with it).
	WatchReloads int
	ReloadSec    *promtext.Histogram // how long each reload that ended ready took
	DrainSec     *promtext.Histogram // from each process's stop signal to its exit
	// HandoverSec (with --handover) holds, for each relay that moved a
	// connection, how long its connections took to move: from the relay's
	// start to its last commit. nil without --handover.
	HandoverSec *promtext.Histogram
}

// Worker is one worker index, as View shows it.
type Worker struct {
	Cur  *gen.Gen // serving there; nil while it restarts
	Next *gen.Gen // starting or baking to take its place
	// Restarts counts its restarts; Unresponsive the processes replaced
	// there as hung. Crashing: it exited failingAfter times in a row
	// without serving long, and restarts with a backoff.
	Restarts, Unresponsive int
	Crashing               bool
}

// View returns what the machine shows of itself now.
func (m *Machine) View() View {
	reloadSec, drainSec := m.counts.reloadSec, m.counts.drainSec
	if reloadSec == nil {
		reloadSec = promtext.NewHistogram(reloadBuckets...) // none observed yet
	}
	if drainSec == nil {
		drainSec = promtext.NewHistogram(drainBuckets...)
	}
	v := View{Gens: m.gens, Restarts: m.restarts, Killed: m.killed, Unresponsive: m.counts.unresponsive, DrainsKilled: m.counts.drainsKilled,
		Reloading: m.reloading, Queued: m.q.Queued(), Rolling: m.roll != nil && m.roll.kind != spawnFirst, Rollback: m.previous,
		Reloads: m.counts.reloads, Handover: m.counts.handover, WatchReloads: m.counts.watchReloads, ReloadSec: reloadSec, DrainSec: drainSec}
	if m.counts.handover != nil {
		v.HandoverSec = m.counts.handoverSec
		if v.HandoverSec == nil {
			v.HandoverSec = promtext.NewHistogram(handoverBuckets...) // none observed yet
		}
	}
	if g := m.first(); g.PID != 0 {
		v.Current = g
	}
	for _, sl := range m.slots {
		v.Workers = append(v.Workers, Worker{Cur: sl.cur, Next: sl.next, Restarts: sl.restarts, Unresponsive: sl.unresponsive, Crashing: sl.crashes >= failingAfter})
	}
	return v
}
