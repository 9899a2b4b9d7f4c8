//go:build linux

package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
)

// TestRenderWatchReloads: the reloads --watch asked for are counted, 0
// before any.
func TestRenderWatchReloads(t *testing.T) {
	m := machine.New(machine.Options{MaxDraining: 3, ReadyTimeout: time.Minute, DrainTimeout: time.Second, StopSignal: "SIGTERM", First: 1})
	g1 := &gen.Gen{N: 1, PID: -1, Started: time.Unix(1000, 0)}
	for _, ev := range []gen.Event{gen.EvStart{}, gen.EvSpawned{G: g1}, gen.EvReady{G: g1}} {
		m.Step(ev)
	}
	if out := string(Render(m.View(), nil, nil, time.Unix(999, 0), "v1")); !strings.Contains(out, "\nhandoff_watch_reloads_total 0\n") {
		t.Errorf("no handoff_watch_reloads_total 0 in:\n%s", out)
	}
	m.Step(gen.EvWatchChanged{Paths: []string{"/etc/app.conf"}})
	if out := string(Render(m.View(), nil, nil, time.Unix(999, 0), "v1")); !strings.Contains(out, "\nhandoff_watch_reloads_total 1\n") {
		t.Errorf("no handoff_watch_reloads_total 1 after a change:\n%s", out)
	}
}
