package upgrader_test

import (
	"testing"

	"github.com/handoff-dev/handoff/drain"
	"github.com/handoff-dev/handoff/upgrader"
)

// TestDeprecatedNames: the names kept for one release are the new ones.
func TestDeprecatedNames(t *testing.T) {
	var h upgrader.Histogram = upgrader.DurationHistogram{Count: 1}
	if h.Count != 1 || upgrader.DefaultDrainTimeout != drain.DefaultTimeout || upgrader.DefaultIdleGrace != drain.DefaultIdleGrace {
		t.Error("a deprecated name is not an alias of its new one")
	}
}
