// Package lifecycle holds what the library (package upgrader) and the daemon
// (handoff run) both do around a generation's life, written once: the rule
// for a reload asked while another is on its way (Queue), the books of stop
// signals and the stop delay (Stops), how they keep systemd waiting while an
// upgrade or reload runs, and the check that a program lies in the directory
// a generation starts in.
package lifecycle

import (
	"path/filepath"
	"strings"
	"time"
)

// While an upgrade or reload runs, systemd is asked every ExtendEvery for
// ExtendBy more time (EXTEND_TIMEOUT_USEC=), so that a slow start does not
// trip TimeoutStartSec= or the reload timeout, while one that hangs still
// does once the upgrade's own timeout ends it.
const (
	ExtendEvery = time.Second
	ExtendBy    = 5 * time.Second
)

// Within reports whether path lies in dir or below it. Both are taken as
// given: resolve symlinks first where that matters.
func Within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
