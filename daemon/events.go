//go:build linux

package daemon

import (
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/doors"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
)

// The machine's events, all of them: what step takes. Every name starts
// with ev.

// Events of handoff's own: signals, requests, timers, and the results of
// actions.
type (
	evStart       struct{}
	evSignal      struct{ sig syscall.Signal }
	evReload      struct{ w chan<- ReloadResult }
	evRollback    struct{ w chan<- ReloadResult }
	evSpawned     struct{ g *generation }
	evSpawnFailed struct {
		err  error
		n, w int // the generation and worker index it was to start
	}
	evHandedOver struct{} // a new handoff took over (SIGUSR2)
	evHung       struct {
		g     *generation
		quiet time.Duration
	}
	evBakeDone      struct{ g *generation }
	evExtendTick    struct{}
	evStopDelayOver struct{}
	evKillDue       struct{ g *generation }
	evRestartDue    struct{ w int } // worker index w
	evMemTick       struct{}
	// evMemSample: the resident memory of the serving workers, measured for
	// actMeasure.
	evMemSample       struct{ rss map[*generation]int64 }
	evSelfUpgradeDone struct{ err error }
	// evDoorsClosed: new connections are held back for a stop.
	evDoorsClosed struct{ doors.Result }
)

// Events about one process, which its goroutines send to the supervisor.
type (
	evReady  struct{ g *generation }
	evExited struct {
		g   *generation
		err error
	}
	evNotReady struct {
		g   *generation
		err error
	}
)

// evLeft reports the processes a generation left behind at its exit; it
// comes before that generation's evExited.
type evLeft struct {
	g      *generation
	strays []reaper.Stray
}

// evBakeFailed: a baking generation was shown not to serve.
type evBakeFailed struct {
	g      *generation
	reason string
}

// evUnresponsive: a serving process was shown hung.
type evUnresponsive struct {
	g      *generation
	reason string
	args   []any // the evidence, for the log record
}

// event is what step takes: one of the ev* types of this file. A sealed
// interface, whose every type step handles (TestSwitchesAreExhaustive).
type event interface{ isEvent() }

func (evStart) isEvent()           {}
func (evSignal) isEvent()          {}
func (evReload) isEvent()          {}
func (evRollback) isEvent()        {}
func (evSpawned) isEvent()         {}
func (evSpawnFailed) isEvent()     {}
func (evHandedOver) isEvent()      {}
func (evHung) isEvent()            {}
func (evBakeDone) isEvent()        {}
func (evExtendTick) isEvent()      {}
func (evStopDelayOver) isEvent()   {}
func (evKillDue) isEvent()         {}
func (evRestartDue) isEvent()      {}
func (evMemTick) isEvent()         {}
func (evMemSample) isEvent()       {}
func (evSelfUpgradeDone) isEvent() {}
func (evDoorsClosed) isEvent()     {}
func (evReady) isEvent()           {}
func (evExited) isEvent()          {}
func (evNotReady) isEvent()        {}
func (evLeft) isEvent()            {}
func (evBakeFailed) isEvent()      {}
func (evUnresponsive) isEvent()    {}
