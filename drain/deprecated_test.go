package drain_test

import (
	"testing"

	"github.com/handoff-dev/handoff/drain"
)

// TestDeprecatedNames: the names kept for one release still work.
func TestDeprecatedNames(t *testing.T) {
	d := drain.New(0, nil)
	if n := d.Open(); n != 0 || d.OpenConns() != 0 {
		t.Errorf("a new Drainer: Open %d, OpenConns %d; want 0", n, d.OpenConns())
	}
}
