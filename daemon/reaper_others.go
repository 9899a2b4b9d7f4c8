//go:build !linux

package daemon

import "log/slog"

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
