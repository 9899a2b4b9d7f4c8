package machine

import (
	"log/slog"
	"time"
)

// The machine's actions, all of them: what step returns and the supervisor
// carries out. Every name starts with act.

// Actions.
type (
	ActLog struct {
		Level slog.Level
		Event string
		Msg   string
		Args  []any
	}
	ActSpawn struct {
		N    int
		Spec *Spec // nil: as the configuration resolves now
		W    int   // its worker index
	}
	ActSignal struct {
		G   *Gen
		Sig string // its name: SIGTERM
	}
	ActAfter struct {
		D  time.Duration
		Ev Event
	}
	ActRelease     struct{ G *Gen } // it exited: close what it held
	ActCancelReady struct{ G *Gen } // stop waiting for its readiness
	ActNotify      struct {
		Kind   string // "ready", "reloading", "status", "stopping"
		Status string
	}
	ActUpgraderReady struct{}
	ActUpgraderStop  struct{}
	ActReply         struct {
		WS []chan<- ReloadResult
		R  ReloadResult
	}
	ActSelfUpgrade      struct{ NextN int }
	ActSelfUpgradeEnded struct{}
	ActCloseDoors       struct{}           // a stop begins: hold new connections back, let the generations take the queued ones
	ActReleaseSockets   struct{}           // every generation has the stop signal: close handoff's copies of the sockets
	ActDone             struct{ Code int } // every generation has exited: handoff exits
	ActMeasure          struct{}           // measure the serving workers' memory: EvMemSample follows
	// ActPause stops (SIGSTOP) g's process group, so that it takes no
	// more connections, or resumes it (SIGCONT).
	ActPause struct {
		G     *Gen
		Pause bool
	}
)

// ActStopStrays stops processes left behind.
type ActStopStrays struct{ Strays []Stray }

// ActWatchBake starts the checks of g's bake window; old is the generation
// serving beside it.
type ActWatchBake struct {
	G, Old *Gen
	Others []*Gen // every process serving beside g, old among them
}

// Action is one of the act* types below: a sealed interface, whose every
// type the supervisor carries out (TestSwitchesAreExhaustive).
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
