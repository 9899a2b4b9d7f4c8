package gen

import (
	"strconv"
	"strings"
	"time"
)

// State is a process's state; see the package documentation.
type State int

// The states, in the order a process goes through them.
const (
	Starting State = iota
	Baking
	Serving
	Draining
	Exited
)

// String returns the name `handoff status` shows: Serving is "ready".
func (s State) String() string {
	return [...]string{"starting", "baking", "ready", "draining", "exited"}[s]
}

// Gen is one process of a generation, as the machine sees it: the
// generation and worker index it runs as, its state and its history.
// Package spawn creates it when it starts the process, the supervisor keeps
// the process's handles beside it and tells the machine (EvSpawned); after
// that only the machine changes it.
type Gen struct {
	N       int // its generation, from 1
	W       int // its worker index, from 0 (--workers)
	PID     int
	State   State
	Started time.Time
	ReadyAt time.Time
	Restart bool // started to replace a generation that exited on its own
	// ForMemory: started to replace a worker past --max-memory.
	ForMemory bool
	// ForHung: started to replace a process shown hung; Unresponsive: it
	// was shown hung itself, and is paused until it drains.
	ForHung      bool
	Unresponsive bool
	Dir          string // its working directory (--chdir, resolved), or ""
	Spec         *Spec  // what it runs
	Launch       string // how LISTEN_PID was passed: "traced" or "shim"
	// Prepare and Exec say where its start went, in its generation.started
	// record: its environment, notify socket and output pipes made ready;
	// then fork, exec and LISTEN_PID written (its program runs from then).
	Prepare, Exec time.Duration
	FailWhy       string // set when the machine killed it for not being ready
	ExitedAt      time.Time
	Hung          bool    // it stopped sending WATCHDOG=1
	Killed        bool    // sent SIGKILL (counted in the machine's killed)
	Left          []Stray // the processes it left behind at its exit
}

// Spec is what a generation runs, resolved when it starts: the program's
// file (symlinks resolved) and its name as configured (argv[0]), its
// arguments, its directory and the variables of the env file. A rollback
// runs the spec of an earlier generation again.
type Spec struct {
	Program string   `json:"program"`
	Name    string   `json:"name"`
	Args    []string `json:"args,omitempty"`
	Dir     string   `json:"dir,omitempty"`
	Env     []string `json:"env,omitempty"`
}

// Stray is a live child of handoff that it did not start: a process a
// generation left behind.
type Stray struct {
	PID  int    `json:"pid"`
	PGID int    `json:"pgid"`
	Cmd  string `json:"cmd"`
}

// String names s for a log record: "pid 12 (sleep 60)".
func (s Stray) String() string { return "pid " + strconv.Itoa(s.PID) + " (" + s.Cmd + ")" }

// StrayList names strays for a log record: "pid 12 (sleep 60), pid 13 (…)".
func StrayList(strays []Stray) string {
	names := make([]string, len(strays))
	for i, st := range strays {
		names[i] = st.String()
	}
	return strings.Join(names, ", ")
}

// ReloadResult is the outcome of one reload, as `handoff reload` reports it.
type ReloadResult struct {
	OK         bool   `json:"ok"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Millis     int64  `json:"ms,omitempty"`
	PIDs       []int  `json:"pids,omitempty"` // every worker's, with --workers above 1
	Error      string `json:"error,omitempty"`
}
