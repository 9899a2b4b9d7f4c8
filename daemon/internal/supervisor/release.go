//go:build linux

package supervisor

import (
	"errors"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/release"
)

// releaseCheckEvery is how often a generation's release files are looked
// at (one stat each) for a change in place under it.
const releaseCheckEvery = 2 * time.Second

// identify learns what g runs (package release) off the supervisor's
// goroutine: reading the program's file whole takes milliseconds for a
// large binary, and must not delay a reload. The files are read once for
// all (s.releaseCache): a worker, a restart after a crash or a reload into
// the same release costs a stat. A file not read yet is read once g is
// ready, or has exited: not while g starts, which it would take CPU from.
// For worker 0's process it logs
// release.identified, release.same when prev (the process g replaces, or
// nil) runs the same release, and watches the files for a change in place
// under g (watchRelease).
func (s *supervisor) identify(g *generation, prev *generation) {
	spec, n, w, pid := g.Spec, g.N, g.W, g.PID
	if spec == nil {
		return
	}
	prevN := 0
	if prev != nil {
		prevN = prev.N
	}
	readyC, exitedC := g.Ready(), g.Exited()
	go func() {
		id, err := s.releaseCache.Known(spec.Program, spec.Args, spec.Dir)
		if errors.Is(err, release.ErrNotCached) {
			select {
			case <-readyC:
			case <-exitedC:
			}
			id, err = s.releaseCache.Of(spec.Program, spec.Args, spec.Dir)
		}
		if err != nil {
			if w == 0 {
				s.log.Warn("cannot identify the release: status and metrics will not show it", "event", "release.unknown", "gen", n, "gen_pid", pid, "err", err)
			}
			return
		}
		g.ident.Store(&id)
		if w != 0 {
			return
		}
		args := []any{"event", "release.identified", "gen", n, "gen_pid", pid, "path", id.Program.Path, "size", id.Program.Size, "sha256", id.Program.SHA256,
			"modified", id.Program.Modified.UTC().Format(time.RFC3339)}
		if id.Script != nil {
			args = append(args, "script", id.Script.Path, "script_sha256", id.Script.SHA256)
		}
		s.log.Info("release identified", args...)
		if prev != nil {
			if p := prev.ident.Load(); p != nil && p.Same(id) {
				s.log.Info("the new generation runs the release already serving (the same bytes); it is started all the same, for its configuration or environment may differ",
					"event", "release.same", "gen", n, "serving_gen", prevN, "sha256", id.Short())
			}
		}
		s.watchRelease(exitedC, id, n, pid)
	}()
}

// watchRelease warns once if a file of id changes in place while the
// process pid of generation n runs it — overwritten, or another file renamed
// over its path — until exited is closed: what serves is then no longer
// what is on disk, and a restart of that generation (after a crash) would
// run the new file without a reload.
func (s *supervisor) watchRelease(exited <-chan struct{}, id release.Identity, n, pid int) {
	files := []release.File{id.Program}
	if id.Script != nil {
		files = append(files, *id.Script)
	}
	t := time.NewTicker(releaseCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-exited:
			return
		case <-t.C:
		}
		for _, f := range files {
			how, err := f.Changed()
			if err != nil || how == "" {
				continue
			}
			s.log.Warn("the release's file changed under a running generation: what serves is no longer what is on disk, and a restart would run the new file — ship each release to a directory of its own and reload",
				"event", "release.changed", "gen", n, "gen_pid", pid, "path", f.Path, "how", how)
			return
		}
	}
}

// releases returns the identity of each process that has one, for status
// and the metrics.
func (s *supervisor) releases() map[int]release.Identity {
	out := map[int]release.Identity{}
	for _, g := range s.procs {
		if id := g.ident.Load(); id != nil {
			out[g.PID] = *id
		}
	}
	return out
}
