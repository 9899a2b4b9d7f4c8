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

// While Busy says so, the looks are put off, for at most --hung-after in a
// row; a look that is not put off starts the count again.
func TestPutOff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	after := 3 * time.Second
	var since time.Time
	for _, c := range []struct {
		at   time.Duration
		busy bool
		want bool
	}{
		{0, false, false},
		{250 * time.Millisecond, true, true},
		{2 * time.Second, true, true},
		{3249 * time.Millisecond, true, true},
		{3250 * time.Millisecond, true, false}, // busy for after: look
		{3500 * time.Millisecond, true, true},  // counted again from here
		{3750 * time.Millisecond, false, false},
		{4 * time.Second, true, true},
	} {
		if got := putOff(t0.Add(c.at), c.busy, &since, after); got != c.want {
			t.Errorf("at %v, busy %v: put off %v, want %v", c.at, c.busy, got, c.want)
		}
	}
}
