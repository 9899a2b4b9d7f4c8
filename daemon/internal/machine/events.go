package machine

import (
	"time"
)

// The machine's events, all of them: what step takes. Every name starts
// with ev.

// Events of handoff's own: signals, requests, timers, and the results of
// actions.
type (
	EvStart       struct{}
	EvSignal      struct{ Sig string } // its name: SIGHUP, SIGTERM, SIGINT, SIGUSR2
	EvReload      struct{ W chan<- ReloadResult }
	EvRollback    struct{ W chan<- ReloadResult }
	EvSpawned     struct{ G *Gen }
	EvSpawnFailed struct {
		Err  error
		N, W int // the generation and worker index it was to start
	}
	EvHandedOver struct{} // a new handoff took over (SIGUSR2)
	EvHung       struct {
		G     *Gen
		Quiet time.Duration
	}
	EvBakeDone      struct{ G *Gen }
	EvExtendTick    struct{}
	EvStopDelayOver struct{}
	EvKillDue       struct{ G *Gen }
	EvRestartDue    struct{ W int } // worker index w
	EvMemTick       struct{}
	// EvMemSample: the resident memory of the serving workers, measured for
	// ActMeasure.
	EvMemSample       struct{ RSS map[*Gen]int64 }
	EvSelfUpgradeDone struct{ Err error }
	// EvDoorsClosed: new connections are held back for a stop. Its fields
	// are those of the doors package's Result, which converts to it.
	EvDoorsClosed struct {
		Held int      // sockets that drop new connections
		Left []string // sockets left open to them: handoff's parent (a service manager) holds them too
		// ParentUnknown: handoff could not read its parent's descriptors,
		// and left every socket alone.
		ParentUnknown bool
		Queued        int           // connections still queued or half open when the wait ended
		Took          time.Duration // how long it took
		Err           error
		// Job is what systemd says stops handoff's unit ("stop",
		// "restart"), asked when sockets of handoff's own are in its fd
		// store; JobErr why it could not be told.
		Job    string
		JobErr error
	}
)

// Events about one process, which its goroutines send to the supervisor.
type (
	EvReady struct{ G *Gen }
	// EvExited: the process has exited; Err is what its wait returned
	// (nil: exit status 0), How says so ("exit status 3", "killed by
	// signal SIGKILL"), and Lines are the last lines it printed, stderr
	// first.
	EvExited struct {
		G     *Gen
		Err   error
		How   string
		Lines []string
	}
	// EvNotReady: the process was not ready within --ready-timeout; Why
	// says what was seen, where something explains it ("it never sent
	// READY=1 ..."), or is empty.
	EvNotReady struct {
		G   *Gen
		Why string
	}
)

// EvLeft reports the processes a generation left behind at its exit; it
// comes before that generation's EvExited.
type EvLeft struct {
	G      *Gen
	Strays []Stray
}

// EvBakeFailed: a baking generation was shown not to serve.
type EvBakeFailed struct {
	G      *Gen
	Reason string
}

// EvUnresponsive: a serving process was shown hung.
type EvUnresponsive struct {
	G      *Gen
	Reason string
	Args   []any // the evidence, for the log record
}

// Event is what step takes: one of the ev* types of this file. A sealed
// interface, whose every type step handles (TestSwitchesAreExhaustive).
type Event interface{ isEvent() }

func (EvStart) isEvent()           {}
func (EvSignal) isEvent()          {}
func (EvReload) isEvent()          {}
func (EvRollback) isEvent()        {}
func (EvSpawned) isEvent()         {}
func (EvSpawnFailed) isEvent()     {}
func (EvHandedOver) isEvent()      {}
func (EvHung) isEvent()            {}
func (EvBakeDone) isEvent()        {}
func (EvExtendTick) isEvent()      {}
func (EvStopDelayOver) isEvent()   {}
func (EvKillDue) isEvent()         {}
func (EvRestartDue) isEvent()      {}
func (EvMemTick) isEvent()         {}
func (EvMemSample) isEvent()       {}
func (EvSelfUpgradeDone) isEvent() {}
func (EvDoorsClosed) isEvent()     {}
func (EvReady) isEvent()           {}
func (EvExited) isEvent()          {}
func (EvNotReady) isEvent()        {}
func (EvLeft) isEvent()            {}
func (EvBakeFailed) isEvent()      {}
func (EvUnresponsive) isEvent()    {}
