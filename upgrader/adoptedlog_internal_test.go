//go:build linux

package upgrader

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// adoptedRecords collects the handover.adopted records' conns and total.
type adoptedRecords struct {
	mu   sync.Mutex
	recs [][2]int64
}

func (r *adoptedRecords) Enabled(context.Context, slog.Level) bool { return true }
func (r *adoptedRecords) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *adoptedRecords) WithGroup(string) slog.Handler            { return r }
func (r *adoptedRecords) Handle(_ context.Context, rec slog.Record) error {
	var ev string
	var conns, total int64
	rec.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "event":
			ev = a.Value.String()
		case "conns":
			conns = a.Value.Int64()
		case "total":
			total = a.Value.Int64()
		}
		return true
	})
	if ev == "handover.adopted" {
		r.mu.Lock()
		r.recs = append(r.recs, [2]int64{conns, total})
		r.mu.Unlock()
	}
	return nil
}

func (r *adoptedRecords) get() [][2]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][2]int64(nil), r.recs...)
}

// The adoptions are logged at the first commit; the commits that follow
// within adoptedEvery are logged together once it has passed, though no
// commit comes after them; end logs what is left, and nothing when nothing
// is; the records' conns add up to the total.
func TestAdoptedLog(t *testing.T) {
	recs := &adoptedRecords{}
	a := &adoptedLog{log: slog.New(recs)}
	a.add(1)
	if got := recs.get(); len(got) != 1 || got[0] != [2]int64{1, 1} {
		t.Fatalf("after the first commit: %v, want one record of 1 (total 1)", got)
	}
	a.add(2)
	a.add(3)
	if got := recs.get(); len(got) != 1 {
		t.Fatalf("two commits right after the first: %v, want them not logged yet", got)
	}
	deadline := time.Now().Add(10 * adoptedEvery)
	for len(recs.get()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no record of the later commits %v after they came: %v", 10*adoptedEvery, recs.get())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := recs.get(); got[1] != [2]int64{5, 6} {
		t.Fatalf("the later commits logged as %v, want 5 (total 6)", got[1])
	}
	a.end()
	if got := recs.get(); len(got) != 2 {
		t.Fatalf("end with nothing left logged %v", got[2:])
	}
	b := &adoptedLog{log: slog.New(recs)}
	b.add(4)
	b.add(5)
	b.end()
	b.add(6) // after the end: counted, not logged
	got := recs.get()[2:]
	if len(got) != 2 || got[0] != [2]int64{4, 4} || got[1] != [2]int64{5, 9} {
		t.Fatalf("a handover that ended within adoptedEvery: %v, want 4 then 5 (total 9)", got)
	}
}
