package upgrader

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/handoff-dev/handoff/internal/lifecycle"
)

// Every generation starts in the directory the first one was started in, as
// that process saw it: the path in $PWD when $PWD names the working
// directory, else the path the kernel resolved. With releases side by side
// and a `current` symlink as the working directory, and no $PWD (systemd sets
// none), that is the first release's own directory: a newer binary would run
// with the old release's files, and once that directory is removed no new
// generation could start. checkNext says so before an upgrade.

// workDirError is the Cause of an UpgradeError of Kind ErrStart when the
// directory the new generation would start in no longer exists.
type workDirError struct {
	dir string // where the new generation would start
	err error  // why it cannot
}

// Error says what is gone and how to start the program so that each
// generation starts in its own release.
func (e *workDirError) Error() string {
	return fmt.Sprintf("the working directory %s, where each new generation starts, is gone (%v) — "+
		"start the program with $PWD set to the symlinked path it runs in (systemd: Environment=PWD=/srv/app/current "+
		"beside WorkingDirectory=/srv/app/current), so that each generation starts in the release the symlink names", e.dir, e.err)
}

func (e *workDirError) Unwrap() error { return e.err }

// checkNext looks at where the next generation would start. It returns a
// *workDirError if that directory is gone. Beside the fork, so as not to
// delay it (0.2 ms in a fresh process), it logs a warning if the binary to
// start lies outside that directory while this generation's own binary lies
// inside: the new release would run with the old one's files. Call wait,
// which returns once the warning is written or found unneeded, before the
// attempt ends.
func (u *Upgrader) checkNext() (wait func(), err error) {
	dir := u.core.StartDir()
	if dir == "" {
		return func() {}, nil
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, &workDirError{dir: dir, err: err}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.warnOtherRelease(dir)
	}()
	return func() { <-done }, nil
}

// warnOtherRelease is checkNext's warning.
func (u *Upgrader) warnOtherRelease(dir string) {
	file, err := u.core.NextBinary()
	if err != nil {
		return // Upgrade reports a binary it cannot find
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err == nil && lifecycle.Within(self, real) && !lifecycle.Within(file, real) {
		u.log.Warn("the new generation will start in this release's directory, not its own", "event", "upgrade.workdir",
			"binary", file, "dir", real,
			"fix", "start the program with $PWD set to the symlinked path it runs in (systemd: Environment=PWD=/srv/app/current beside WorkingDirectory=)")
	}
}
