//go:build linux

package probe

import (
	"testing"
	"time"
)

// A look that costs more than a twentieth of the time spaces the next one
// out, never past --hung-after, never sooner than liveTick.
func TestLookEvery(t *testing.T) {
	for _, c := range []struct{ took, after, want time.Duration }{
		{time.Millisecond, 3 * time.Second, liveTick},
		{12 * time.Millisecond, 3 * time.Second, liveTick},
		{50 * time.Millisecond, 3 * time.Second, time.Second},
		{120 * time.Millisecond, 3 * time.Second, 2400 * time.Millisecond},
		{time.Second, 3 * time.Second, 3 * time.Second},
		{time.Second, 100 * time.Millisecond, liveTick},
	} {
		if got := lookEvery(c.took, c.after); got != c.want {
			t.Errorf("lookEvery(%v, %v) = %v, want %v", c.took, c.after, got, c.want)
		}
	}
}
