//go:build linux

package supervisor

import (
	"testing"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
)

// TestActionsOnReleasedProcess: an action about a process already released
// (its kill at the drain timeout racing its exit, say) does nothing: the
// lookup in procs misses, and handoff, which holds every socket, carries
// on.
func TestActionsOnReleasedProcess(t *testing.T) {
	s := &supervisor{procs: map[*gen.Gen]*generation{}, events: make(chan gen.Event, 1)}
	gone := &gen.Gen{N: 3, W: 0, PID: 0}
	for _, a := range []gen.Action{
		gen.ActSignal{G: gone, Sig: "SIGTERM"},
		gen.ActPause{G: gone, Pause: true},
		gen.ActPause{G: gone, Pause: false},
		gen.ActCancelReady{G: gone},
		gen.ActRelease{G: gone},
		gen.ActWatchBake{G: gone},
		gen.ActHandOver{Old: gone, New: gone},
		gen.ActAfter{D: 0, Ev: gen.EvKillDue{G: gone}},
	} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%T about a released process: panic %v", a, r)
				}
			}()
			s.carryOut(a)
		}()
	}
}
