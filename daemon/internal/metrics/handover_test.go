//go:build linux

package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
)

// TestRenderHandover: with --handover, the relayed connections by outcome
// and the relays by how long they took, 0 before any relay; without it, no
// such family.
func TestRenderHandover(t *testing.T) {
	opts := machine.Options{MaxDraining: 3, ReadyTimeout: time.Minute, DrainTimeout: time.Second, StopSignal: "SIGTERM", First: 1}
	if out := string(Render(machine.New(opts).View(), nil, nil, time.Unix(999, 0), "v")); strings.Contains(out, "handoff_handover_") {
		t.Errorf("handover counted without --handover:\n%s", out)
	}
	opts.Handover = true
	m := machine.New(opts)
	if out := string(Render(m.View(), nil, nil, time.Unix(999, 0), "v")); !strings.Contains(out, `handoff_handover_connections_total{outcome="handed_over"} 0`) ||
		!strings.Contains(out, "handoff_handover_duration_seconds_count 0") {
		t.Errorf("no handover families at 0 with --handover:\n%s", out)
	}
	g1 := &gen.Gen{N: 1, PID: -1}
	g2 := &gen.Gen{N: 2, PID: -2}
	g3 := &gen.Gen{N: 3, PID: -3}
	// A relay that moved nothing is not timed.
	m.Step(gen.EvRelayed{Old: g3, New: g1, Refused: 2, Done: true})
	m.Step(gen.EvRelayed{Old: g1, New: g2, Committed: 6, Refused: 3})
	m.Step(gen.EvRelayed{Old: g1, New: g2, Committed: 2})
	m.Step(gen.EvRelayed{Old: g1, New: g2, Fallback: 1, Done: true, Took: 700 * time.Millisecond})
	out := string(Render(m.View(), nil, nil, time.Unix(999, 0), "v"))
	for _, want := range []string{
		`handoff_handover_connections_total{outcome="handed_over"} 8`,
		`handoff_handover_connections_total{outcome="refused"} 5`,
		`handoff_handover_connections_total{outcome="fallback"} 1`,
		`handoff_handover_duration_seconds_bucket{le="0.5"} 0`,
		`handoff_handover_duration_seconds_bucket{le="1"} 1`,
		`handoff_handover_duration_seconds_count 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}
