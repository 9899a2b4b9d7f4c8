package upgrader

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
)

// The errors of this package; compare with errors.Is, since most are
// returned wrapped with what was being done.
var (
	// ErrNotReady is returned by Upgrade before this generation has called
	// Ready (or Serve): there is nothing to hand over yet.
	ErrNotReady = errors.New("upgrader: this generation is not ready yet; call Ready (or Serve) first")
	// ErrStopped is returned by Upgrade once the Upgrader is stopping or has
	// stopped, and is the Kind of the *UpgradeError of an upgrade cut short
	// by a stop.
	ErrStopped = errors.New("upgrader: stopping")
	// ErrHandedOver is returned by Upgrade once this generation has handed
	// over to a new one: upgrade the newest one instead.
	ErrHandedOver = errors.New("upgrader: this generation has already handed over; upgrade the newest one")
	// ErrStart is the Kind of the *UpgradeError that Upgrade returns when the
	// new binary could not be started (missing, not executable, no
	// descriptor left, its working directory gone).
	ErrStart = errors.New("upgrader: new binary could not be started")
	// ErrExited is the Kind of the *UpgradeError that Upgrade returns when
	// the new generation exited before it was ready.
	ErrExited = errors.New("upgrader: new generation exited before it was ready")
	// ErrTimeout is the Kind of the *UpgradeError that Upgrade returns when
	// the new generation was not ready within UpgradeTimeout and was killed.
	ErrTimeout = errors.New("upgrader: new generation was not ready in time")
	// ErrBake is the Kind of the *UpgradeError that Upgrade returns when the
	// new generation called Ready but did not prove that it serves within
	// the bake window (Options.Bake), and was killed; the UpgradeError's
	// Cause says what was seen.
	ErrBake = errors.New("upgrader: new generation did not prove it serves in its bake window; rolled back")
	// ErrDraining is returned by Go once this generation has begun to
	// drain: the job is not started, and should go to the generation that
	// serves.
	ErrDraining = errors.New("upgrader: this generation is draining; start background work in the one that serves")
	// ErrPID1 is returned by Upgrade (and logged once at Ready) in a
	// process that is PID 1 — a container's entrypoint — which does not
	// upgrade: the old generation exits after the handover, and PID 1's exit
	// ends the container with every process in it.
	ErrPID1 = errors.New("upgrader: this process is PID 1 (a container's entrypoint), and its exit after a handover would end the container — " +
		"roll out a new container instead, or run the program under `handoff run` as the entrypoint; SIGTERM still drains")
	// ErrPIDFile is returned by New, wrapped with the path and the reason,
	// when Options.PIDFile names a file that cannot be written, so that a
	// server that is given a bad path on its command line refuses to start
	// instead of serving without its PID file (and, under systemd, without
	// ever telling it READY=1).
	ErrPIDFile = errors.New("upgrader: the PID file cannot be written")
)

// errParentUnreachable: the core wrote the PID file at Ready but could not
// tell the parent, which has most likely died. A cause only: Ready returns it
// wrapped, with the prefix.
var errParentUnreachable = errors.New("the parent generation cannot be told that this one is ready")

// errNoHandoff is why an upgrade cannot happen where a process cannot pass
// its sockets to the one it starts (see noHandoff); Upgrade returns it, and
// errors.Is(err, errors.ErrUnsupported) holds.
var errNoHandoff = fmt.Errorf("upgrader: %s cannot pass sockets to a new process, so a running server cannot be upgraded here: %w — restart it instead (upgrades work on Linux and other Unix systems)",
	runtime.GOOS, errors.ErrUnsupported)

// UpgradeError describes a failed upgrade. The old generation keeps serving.
type UpgradeError struct {
	// Kind is ErrStart, ErrExited, ErrTimeout, ErrBake or ErrStopped.
	Kind error
	// Cause is what the operating system or the fd-passing layer reported.
	Cause error
	// Stderr holds the last lines the new generation wrote to stderr
	// between its New and its failure, oldest first, when any were seen.
	// What it wrote before New went straight to the stderr it shares with
	// this process.
	Stderr []string
}

// Error returns one line: the kind, the cause and the last stderr lines.
func (e *UpgradeError) Error() string {
	var b strings.Builder
	b.WriteString("upgrader: upgrade failed: ")
	b.WriteString(strings.TrimPrefix(e.Kind.Error(), "upgrader: "))
	if e.Cause != nil {
		b.WriteString(" (")
		b.WriteString(e.Cause.Error())
		b.WriteString(")")
	}
	if len(e.Stderr) > 0 {
		b.WriteString("; its last stderr: ")
		b.WriteString(strings.Join(e.Stderr, " | "))
	}
	switch {
	case e.Kind == ErrExited && len(e.Stderr) == 0:
		b.WriteString(" — it printed nothing after upgrader.New; what it printed before is in this process's stderr")
	case e.Kind == ErrStart && (errors.Is(e.Cause, syscall.EMFILE) || errors.Is(e.Cause, syscall.ENFILE)):
		b.WriteString(" — no descriptor was left to start it: raise the limit (ulimit -n, LimitNOFILE= in the unit) or find what holds them (ls /proc/PID/fd)")
	case e.Kind == ErrStart && !errors.As(e.Cause, new(*workDirError)):
		b.WriteString(" — check that the binary exists at the same path and is executable")
	case e.Kind == ErrTimeout:
		b.WriteString(" — the new binary must call Ready (or Serve) within UpgradeTimeout")
	case e.Kind == ErrBake:
		b.WriteString(" — this generation serves on; fix the release and upgrade again")
	}
	return b.String()
}

// Unwrap returns the kind and the cause.
func (e *UpgradeError) Unwrap() []error { return []error{e.Kind, e.Cause} }
