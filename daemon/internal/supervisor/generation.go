//go:build linux

package supervisor

import (
	"sync/atomic"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/release"
	"github.com/handoff-dev/handoff/daemon/internal/spawn"
)

// generation is one process of the program, as the supervisor keeps it
// beside the machine's Gen: what package spawn started, and what the
// supervisor adds. Only the supervisor's goroutine changes it.
type generation struct {
	*spawn.Process
	// timers holds the pending timers whose events name this generation
	// (its kill at the drain timeout, the end of its bake): stopped when it
	// exits, so that a generation gone is not kept in memory until they
	// fire — --drain-timeout after each reload, 30 s by default.
	timers []*time.Timer
	// ident is what it runs, once identify has read it; nil until then,
	// or if the files could not be read.
	ident atomic.Pointer[release.Identity]
}

// signal sends sig to g's process group (see spawn.Process.Signal). It does
// nothing on a nil g: a process already released, whose lookup in procs
// missed.
func (g *generation) signal(sig syscall.Signal) {
	if g != nil {
		g.Process.Signal(sig)
	}
}
