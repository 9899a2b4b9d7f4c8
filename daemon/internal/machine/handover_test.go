package machine

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
)

// TestHandOverAtPromote: with --handover, a reload's promote says
// ActHandOver (old, new) just before the old one's stop signal, and the
// first start says it with no old one; without --handover, never.
func TestHandOverAtPromote(t *testing.T) {
	for _, on := range []bool{false, true} {
		m := New(Options{MaxDraining: 3, ReadyTimeout: time.Minute, DrainTimeout: time.Second, StopSignal: "SIGTERM", First: 1, Handover: on})
		g1 := &gen.Gen{N: 1, PID: 101}
		g2 := &gen.Gen{N: 2, PID: 102}
		var acts []gen.Action
		for _, ev := range []gen.Event{gen.EvStart{}, gen.EvSpawned{G: g1}, gen.EvReady{G: g1}, gen.EvReload{}, gen.EvSpawned{G: g2}, gen.EvReady{G: g2}} {
			acts = append(acts, m.Step(ev)...)
		}
		var hos []gen.ActHandOver
		signalled := -1
		for i, a := range acts {
			switch a := a.(type) {
			case gen.ActHandOver:
				hos = append(hos, a)
			case gen.ActSignal:
				if a.G == g1 && signalled < 0 {
					signalled = i
					if on && (len(hos) != 2 || hos[1].Old != g1 || hos[1].New != g2) {
						t.Errorf("the old one signalled before ActHandOver{g1, g2}: %v", hos)
					}
				}
			}
		}
		switch {
		case !on && len(hos) > 0:
			t.Errorf("without --handover: %v", hos)
		case on && (len(hos) != 2 || hos[0].Old != nil || hos[0].New != g1):
			t.Errorf("with --handover: %+v, want {nil g1} then {g1 g2}", hos)
		}
	}
}

// TestRelayedCounts: each EvRelayed adds to View.Handover by outcome as it
// comes (a commit: moved and refused; the end: fallen back), and the end
// logs handover.relayed with the relay's totals, a warning when some drain.
func TestRelayedCounts(t *testing.T) {
	m := New(Options{MaxDraining: 3, ReadyTimeout: time.Minute, DrainTimeout: time.Second, StopSignal: "SIGTERM", First: 1, Handover: true})
	g1, g2 := &gen.Gen{N: 1, PID: 101}, &gen.Gen{N: 2, PID: 102}
	logged := func(acts []gen.Action) *gen.ActLog {
		for _, a := range acts {
			if l, ok := a.(gen.ActLog); ok && l.Event == "handover.relayed" {
				return &l
			}
		}
		return nil
	}
	if l := logged(m.Step(gen.EvRelayed{Old: g1, New: g2, Committed: 20, Refused: 2})); l != nil {
		t.Errorf("logged at a commit: %v", l)
	}
	m.Step(gen.EvRelayed{Old: g1, New: g2, Committed: 3})
	if h := m.View().Handover; h["handed_over"] != 23 || h["refused"] != 2 || h["fallback"] != 0 {
		t.Errorf("counts after the commits %v", h)
	}
	l := logged(m.Step(gen.EvRelayed{Old: g1, New: g2, Fallback: 15, Done: true, Err: "the new process closed its channel (it exited)", Took: 1500 * time.Millisecond}))
	if h := m.View().Handover; h["handed_over"] != 23 || h["refused"] != 2 || h["fallback"] != 15 {
		t.Errorf("counts at the end %v", h)
	}
	if l == nil || l.Level != slog.LevelWarn || fmt.Sprint(l.Args) != fmt.Sprint([]any{"gen", 1, "gen_pid", 101, "to_gen", 2, "to_pid", 102,
		"handed_over", 23, "refused", 2, "fallback", 15, "took_ms", int64(1500), "err", "the new process closed its channel (it exited)"}) {
		t.Errorf("handover.relayed: %+v", l)
	}
}
