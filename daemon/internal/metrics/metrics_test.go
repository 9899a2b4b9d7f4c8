//go:build linux

package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
)

// TestRender renders the figures of a machine whose first generation serves
// and whose reload failed: each family once, the values the machine holds.
func TestRender(t *testing.T) {
	m := machine.New(machine.Options{MaxDraining: 3, ReadyTimeout: time.Minute, DrainTimeout: time.Second, StopSignal: "SIGTERM", First: 1})
	g1 := &gen.Gen{N: 1, PID: -1, Started: time.Unix(1000, 0)}
	g2 := &gen.Gen{N: 2, PID: -2, Started: time.Unix(1001, 0)}
	for _, ev := range []gen.Event{gen.EvStart{}, gen.EvSpawned{G: g1}, gen.EvReady{G: g1},
		gen.EvReload{}, gen.EvSpawned{G: g2}, gen.EvExited{G: g2, How: "exit status 3"}} {
		m.Step(ev)
	}
	out := string(Render(m.View(), map[*gen.Gen]int64{g1: 20 << 20}, nil, time.Unix(999, 0), "v1.2.3"))
	for _, want := range []string{
		`handoff_build_info{version="v1.2.3",goversion="`,
		"handoff_start_time_seconds 999\n",
		`handoff_reloads_total{outcome="failed",reason="exited"} 1`,
		`handoff_processes{state="ready"} 1`,
		`handoff_processes{state="starting"} 0`,
		"handoff_serving_generation 1\n",
		"handoff_serving_generation_start_time_seconds 1000\n",
		"handoff_reload_in_progress 0\n",
		`handoff_worker_up{worker="0"} 1`,
		`handoff_worker_resident_memory_bytes{worker="0"} 2.097152e+07`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	for _, family := range []string{"handoff_reloads_total", "handoff_processes", "handoff_drain_duration_seconds"} {
		if n := strings.Count(out, "# TYPE "+family+" "); n != 1 {
			t.Errorf("%s typed %d times, want once", family, n)
		}
	}
}
