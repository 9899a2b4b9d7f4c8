//go:build linux

package daemon

import (
	"log/slog"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/reaper"
)

// The machine's actions, all of them: what step returns and the supervisor
// carries out. Every name starts with act.

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
		w    int      // its worker index
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
	actMeasure          struct{}           // measure the serving workers' memory: evMemSample follows
	// actPause stops (SIGSTOP) g's process group, so that it takes no
	// more connections, or resumes it (SIGCONT).
	actPause struct {
		g     *generation
		pause bool
	}
)

// actStopStrays stops processes left behind.
type actStopStrays struct{ strays []reaper.Stray }

// actWatchBake starts the checks of g's bake window; old is the generation
// serving beside it.
type actWatchBake struct {
	g, old *generation
	others []*generation // every process serving beside g, old among them
}

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
func (actMeasure) isAction()          {}
func (actPause) isAction()            {}
