package upgrader_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/upgrader"
)

// TestPIDFileRefusedAtNew: a PID file that cannot be written fails New, with
// the path and the fix, before anything is served.
func TestPIDFileRefusedAtNew(t *testing.T) {
	dir := t.TempDir()
	for path, want := range map[string]string{
		filepath.Join(dir, "missing", "app.pid"): "does not exist — create it",
		dir:                                      "is a directory",
	} {
		u, err := upgrader.New(upgrader.Options{PIDFile: path, NoSignals: true})
		if err == nil {
			u.Stop()
			t.Fatalf("New with PIDFile %s succeeded", path)
		}
		if !errors.Is(err, upgrader.ErrPIDFile) || !strings.Contains(err.Error(), want) {
			t.Errorf("New with PIDFile %s: %v; want ErrPIDFile saying %q", path, err, want)
		}
	}
}
