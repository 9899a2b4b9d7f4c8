package upgrader

import (
	"errors"
	"strings"
	"syscall"
)

// Errors that Upgrade returns, wrapped in an *UpgradeError where a new
// generation was started; compare with errors.Is.
var (
	// ErrNotReady: Ready has not been called yet, so there is nothing to hand
	// over.
	ErrNotReady = errors.New("upgrader: this generation is not ready yet; call Ready (or Serve) first")
	// ErrStopped: the Upgrader is stopping or has stopped.
	ErrStopped = errors.New("upgrader: stopping")
	// ErrHandedOver: this generation has already handed over to a new one.
	ErrHandedOver = errors.New("upgrader: this generation has already handed over; upgrade the newest one")
	// ErrStart: the new binary could not be started (missing, not
	// executable).
	ErrStart = errors.New("new binary could not be started")
	// ErrExited: the new generation exited before it was ready.
	ErrExited = errors.New("new generation exited before it was ready")
	// ErrTimeout: the new generation was not ready within UpgradeTimeout and
	// was killed.
	ErrTimeout = errors.New("new generation was not ready in time")
	// ErrBake: the new generation called Ready but did not prove that it
	// serves within the bake window (Options.Bake), and was killed; the
	// UpgradeError's Cause says what was seen.
	ErrBake = errors.New("new generation did not prove it serves in its bake window; rolled back")
)

// errParentUnreachable: the core wrote the PID file at Ready but could not
// tell the parent, which has most likely died.
var errParentUnreachable = errors.New("the parent generation cannot be told that this one is ready")

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
	b.WriteString(e.Kind.Error())
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
