package gen

import (
	"time"
)

// The machine's events, all of them: what Step takes. Every name starts
// with Ev.

// Events of handoff's own: signals, requests, timers, and the results of
// actions.
type (
	// EvStart: handoff has started; the first generation starts.
	EvStart struct{}
	// EvSignal: handoff got a signal, by name: SIGHUP (reload), SIGTERM or
	// SIGINT (stop), SIGUSR2 (upgrade handoff itself).
	EvSignal struct{ Sig string }
	// EvReload: `handoff reload` asks for a reload; its result goes to W.
	EvReload struct{ W chan<- ReloadResult }
	// EvWatchChanged: what --watch watches has changed in content (Paths,
	// as given): a reload, as on SIGHUP.
	EvWatchChanged struct{ Paths []string }
	// EvRollback: `handoff rollback` asks for a rollback; its result goes
	// to W.
	EvRollback struct{ W chan<- ReloadResult }
	// EvSpawned: the process ActSpawn asked for has started.
	EvSpawned struct{ G *Gen }
	// EvSpawnFailed: the process of generation N, worker index W, could
	// not be started.
	EvSpawnFailed struct {
		Err  error
		N, W int
	}
	// EvHandedOver: a new handoff took over (SIGUSR2).
	EvHandedOver struct{}
	// EvHung: G stopped sending WATCHDOG=1 for Quiet, longer than the
	// watchdog interval.
	EvHung struct {
		G     *Gen
		Quiet time.Duration
	}
	// EvBakeDone: G's bake window has ended (a timer of ActAfter).
	EvBakeDone struct{ G *Gen }
	// EvExtendTick: time to ask systemd for more time for the reload.
	EvExtendTick struct{}
	// EvStopDelayOver: the stop delay (--stop-delay) has passed.
	EvStopDelayOver struct{}
	// EvKillDue: G's --drain-timeout has passed.
	EvKillDue struct{ G *Gen }
	// EvRestartDue: worker index W's restart backoff has passed.
	EvRestartDue struct{ W int }
	// EvMemTick: time to measure the workers' memory (--max-memory).
	EvMemTick struct{}
	// EvMemSample: the resident memory of the serving workers, measured for
	// ActMeasure.
	EvMemSample struct{ RSS map[*Gen]int64 }
	// EvSelfUpgradeDone: the upgrade of handoff itself has ended, failed if
	// Err is set.
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
	// EvReady: G is ready (--ready).
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

// EvRelayed reports the relay of connections from Old to New (see
// ActHandOver): at each commit passed on, Committed (moved to New) and
// Refused (by New: Old keeps and drains them); once the relay has ended,
// Done, with Refused (those refused since the last commit), Fallback, the
// other connections offered and not committed (their batch was aborted:
// Old keeps and drains them), Err, why it ended if not by the old
// process's end, and Took, the time from the relay's start to the last
// commit it passed on (0 if none): how long the connections took to move,
// without the old process's exit after them.
type EvRelayed struct {
	Old, New                     *Gen
	Committed, Refused, Fallback int
	Done                         bool
	Err                          string
	Took                         time.Duration
}

// Event is what the machine's Step takes: one of the Ev* types of this
// file. A sealed interface, whose every type Step handles (machine's
// TestSwitchesAreExhaustive).
type Event interface{ isEvent() }

func (EvStart) isEvent()           {}
func (EvSignal) isEvent()          {}
func (EvReload) isEvent()          {}
func (EvWatchChanged) isEvent()    {}
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
func (EvRelayed) isEvent()         {}
