package upgrader_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/upgrader"
)

// TestErrors: every sentinel says it is the upgrader's, an *UpgradeError
// says so once, and errors.Is finds its kind and its cause.
func TestErrors(t *testing.T) {
	for _, err := range []error{upgrader.ErrNotReady, upgrader.ErrStopped, upgrader.ErrHandedOver, upgrader.ErrStart,
		upgrader.ErrExited, upgrader.ErrTimeout, upgrader.ErrBake, upgrader.ErrDraining, upgrader.ErrPID1, upgrader.ErrPIDFile} {
		if !strings.HasPrefix(err.Error(), "upgrader: ") {
			t.Errorf("%q: no upgrader: prefix", err)
		}
	}
	var err error = &upgrader.UpgradeError{Kind: upgrader.ErrStart, Cause: syscall.ENOENT}
	if got := err.Error(); strings.Count(got, "upgrader:") != 1 || !strings.Contains(got, "new binary could not be started (no such file or directory)") {
		t.Errorf("UpgradeError: %q", got)
	}
	if !errors.Is(err, upgrader.ErrStart) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("errors.Is does not find the kind and the cause in %q", err)
	}
}
