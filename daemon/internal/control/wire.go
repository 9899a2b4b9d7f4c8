//go:build linux

package control

import (
	"syscall"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/release"
)

// Message is a request of the control protocol: one JSON request per
// connection, one JSON reply.
//
//	{"cmd":"reload"}  →  machine.ReloadResult, once the reload has ended
//	{"cmd":"rollback"}  →  machine.ReloadResult, once the rollback has ended
//	{"cmd":"status"}  →  Status
//	{"cmd":"signal","signal":10}  →  SignalResult
type Message struct {
	Cmd    string `json:"cmd"`
	Signal int    `json:"signal,omitempty"`
}

// Call is a request for the supervisor, with the channel its answer goes
// back on: Reload for "reload" and "rollback", Status or Signal.
// Each is buffered (one answer), so that answering never blocks.
type Call struct {
	Cmd    string
	Sig    syscall.Signal
	Reload chan gen.ReloadResult
	Status chan Status
	Signal chan SignalResult
}

// SignalResult is the outcome of `handoff signal`.
type SignalResult struct {
	OK    bool   `json:"ok"`
	Sent  []int  `json:"pids,omitempty"` // the pids that got the signal
	Gens  []int  `json:"generations,omitempty"`
	Error string `json:"error,omitempty"`
}

// Status is what `handoff status` shows.
type Status struct {
	PID         int         `json:"pid"`
	Program     string      `json:"program"`
	Generations []GenStatus `json:"generations"`
	Listeners   []Socket    `json:"listeners"`
	Restarts    int         `json:"restarts"`
	// Killed counts the generations handoff had to kill with SIGKILL: not
	// ready within --ready-timeout, hung, still draining at
	// --drain-timeout, past --max-draining, or on a second stop signal.
	Killed int `json:"killed"`
	// Unresponsive counts the processes replaced because they were shown
	// hung (--hung-after).
	Unresponsive int       `json:"unresponsive"`
	Reloading    bool      `json:"reloading"`
	Queued       bool      `json:"reload_queued"`
	Rollback     *gen.Spec `json:"rollback,omitempty"` // what 'handoff rollback' would run
	// Workers lists each worker index: what serves there, with --workers
	// above 1.
	Workers []WorkerStatus `json:"workers,omitempty"`
	// ReloadBound is the longest a reload asked now can take, in seconds:
	// 'handoff reload' waits that long by default.
	ReloadBound float64 `json:"reload_bound_seconds,omitempty"`
	// Handover counts, with --handover, the connections offered from a
	// process to the one replacing it, by outcome: handed_over, refused,
	// fallback (aborted before their commit); the last two drained in the
	// old process. Absent without --handover.
	Handover map[string]int `json:"handover,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// GenStatus describes one generation.
type GenStatus struct {
	Generation int     `json:"generation"`
	Worker     int     `json:"worker"`
	PID        int     `json:"pid"`
	State      string  `json:"state"`
	AgeSeconds float64 `json:"age_seconds"`
	Dir        string  `json:"dir,omitempty"`
	// Release is what it runs, once handoff has read it (a moment after
	// the start).
	Release *release.Identity `json:"release,omitempty"`
}

// WorkerStatus describes one worker index of the service.
type WorkerStatus struct {
	Index      int    `json:"index"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	State      string `json:"state"` // ready, starting, restarting, crashing (restarting after 5 exits in a row)
	// UptimeSeconds is how long its serving process has run.
	UptimeSeconds float64 `json:"uptime_seconds"`
	Restarts      int     `json:"restarts"`
	// Unresponsive counts the processes at this index replaced because
	// they were shown hung.
	Unresponsive int   `json:"unresponsive"`
	RSSBytes     int64 `json:"rss_bytes,omitempty"`
}

// Socket describes one socket handoff holds.
type Socket struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}
