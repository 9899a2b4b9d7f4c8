package gen

import (
	"log/slog"
	"time"
)

// The machine's actions, all of them: what Step returns and the supervisor
// carries out, in order. Every name starts with Act.

type (
	// ActLog logs Msg at Level, with Event, the record's stable key, and
	// Args.
	ActLog struct {
		Level slog.Level
		Event string
		Msg   string
		Args  []any
	}
	// ActSpawn starts process W of generation N, running Spec (nil: as the
	// configuration resolves now); EvSpawned or EvSpawnFailed follows.
	ActSpawn struct {
		N    int
		Spec *Spec
		W    int
	}
	// ActSignal sends G's process group the signal named Sig (SIGTERM).
	ActSignal struct {
		G   *Gen
		Sig string
	}
	// ActAfter sends Ev once D has passed.
	ActAfter struct {
		D  time.Duration
		Ev Event
	}
	// ActRelease: G has exited; what was kept of it is let go.
	ActRelease struct{ G *Gen }
	// ActCancelReady stops waiting for G's readiness.
	ActCancelReady struct{ G *Gen }
	// ActNotify tells systemd: Kind "ready", "reloading", "stopping",
	// "extend" (more time for a reload), or "status", with Status.
	ActNotify struct {
		Kind   string
		Status string
	}
	// ActUpgraderReady tells handoff's own upgrader that handoff is ready.
	ActUpgraderReady struct{}
	// ActUpgraderStop stops handoff's own upgrader.
	ActUpgraderStop struct{}
	// ActReply answers each of WS (nil ones skipped) with R.
	ActReply struct {
		WS []chan<- ReloadResult
		R  ReloadResult
	}
	// ActSelfUpgrade starts a new handoff (SIGUSR2), which numbers its
	// generations from NextN; EvSelfUpgradeDone follows.
	ActSelfUpgrade struct{ NextN int }
	// ActSelfUpgradeEnded: the upgrade of handoff itself has ended.
	ActSelfUpgradeEnded struct{}
	// ActCloseDoors: a stop begins: hold new connections back, let the
	// generations take the queued ones; EvDoorsClosed follows.
	ActCloseDoors struct{}
	// ActReleaseSockets: every generation has the stop signal: close
	// handoff's copies of the sockets.
	ActReleaseSockets struct{}
	// ActDone: every generation has exited: handoff exits with Code.
	ActDone struct{ Code int }
	// ActMeasure measures the serving workers' memory: EvMemSample follows.
	ActMeasure struct{}
	// ActPause stops (SIGSTOP) G's process group, so that it takes no
	// more connections, or resumes it (SIGCONT).
	ActPause struct {
		G     *Gen
		Pause bool
	}
)

// ActHandOver: New takes Old's place at its worker index (Old is nil when
// nothing served there: the first start, a restart). With --handover, the
// supervisor relays Old's connections to New if New adopts them — before
// the ActSignal that asks Old to stop, which comes next — and otherwise
// closes the channels that would have carried them; EvRelayed follows once
// a relay has ended.
type ActHandOver struct{ Old, New *Gen }

// ActStopStrays stops processes left behind.
type ActStopStrays struct{ Strays []Stray }

// ActWatchBake starts the checks of g's bake window; old is the generation
// serving beside it.
type ActWatchBake struct {
	G, Old *Gen
	Others []*Gen // every process serving beside g, old among them
}

// Action is one of the Act* types above: a sealed interface, whose every
// type the supervisor carries out (machine's TestSwitchesAreExhaustive
// checks its carryOut).
type Action interface{ isAction() }

func (ActLog) isAction()              {}
func (ActSpawn) isAction()            {}
func (ActSignal) isAction()           {}
func (ActAfter) isAction()            {}
func (ActRelease) isAction()          {}
func (ActCancelReady) isAction()      {}
func (ActNotify) isAction()           {}
func (ActUpgraderReady) isAction()    {}
func (ActUpgraderStop) isAction()     {}
func (ActReply) isAction()            {}
func (ActSelfUpgrade) isAction()      {}
func (ActSelfUpgradeEnded) isAction() {}
func (ActCloseDoors) isAction()       {}
func (ActReleaseSockets) isAction()   {}
func (ActWatchBake) isAction()        {}
func (ActStopStrays) isAction()       {}
func (ActDone) isAction()             {}
func (ActMeasure) isAction()          {}
func (ActPause) isAction()            {}
func (ActHandOver) isAction()         {}
