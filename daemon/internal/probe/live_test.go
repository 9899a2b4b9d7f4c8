//go:build linux

package probe

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/sockdiag"
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

// A request seen waiting at one look and answered by the next counts the
// time it waited, not the time between looks spaced out (lookEvery,
// putOff): with a look 3 s after the last, a request answered at once must
// not raise the bar above --hung-after.
func TestSlowestNotTheGap(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); err != nil {
		t.Fatal(err)
	}
	ino := st.Ino // a socket this process holds, as judge checks

	for _, c := range []struct {
		name    string
		gap     time.Duration
		atMost  time.Duration
		atLeast time.Duration
	}{
		{"looks a tick apart", liveTick, liveTick, liveTick - 20*time.Millisecond},
		{"looks 3 s apart", 3 * time.Second, liveTick, 5 * time.Millisecond},
	} {
		now := time.Now()
		w := &liveWatch{after: 3 * time.Second, lastLook: now.Add(-c.gap), procs: map[*gen.Gen]*liveProc{}}
		p := &liveProc{p: Proc{G: &gen.Gen{PID: os.Getpid()}}, progress: now.Add(-c.gap), accepted: now.Add(-c.gap),
			// At the last look: a request 5 ms old, unanswered.
			prev: map[uint64]sockdiag.Conn{ino: {SegsIn: 1, LastRecvMs: 5}}}
		// Now: answered 10 ms ago, and more messages since.
		conns := map[uint64]sockdiag.Conn{ino: {SegsIn: 5, SegsOut: 5, LastRecvMs: 10, LastSentMs: 10}}
		w.judge(now, p, conns, 0)
		if w.slowest > c.atMost || w.slowest < c.atLeast {
			t.Errorf("%s: the slowest request reads %v, want between %v and %v", c.name, w.slowest, c.atLeast, c.atMost)
		}
		if w.bar() != w.after {
			t.Errorf("%s: the bar is %v, want --hung-after's %v", c.name, w.bar(), w.after)
		}
	}
}
