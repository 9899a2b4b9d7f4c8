//go:build !linux

package daemon

import (
	"log/slog"
	"strconv"
)

// reaper does nothing where handoff cannot list its zombie children.
type reaper struct{}

func newReaper(*slog.Logger) *reaper { return nil }

func (r *reaper) start(startFn func() (int, error)) error {
	_, err := startFn()
	return err
}

func (r *reaper) done(int) {}
func (r *reaper) pause()   {}
func (r *reaper) resume()  {}

// stray is a process a generation left behind (see reaper_linux.go).
type stray struct {
	PID  int    `json:"pid"`
	PGID int    `json:"pgid"`
	Cmd  string `json:"cmd"`
}

func (s stray) String() string { return "pid " + strconv.Itoa(s.PID) + " (" + s.Cmd + ")" }

// strays finds nothing where orphans do not come to handoff.
func (r *reaper) strays() []stray { return nil }
