package machine

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
)

// TestWatchChanged: a change --watch saw asks for a reload as SIGHUP does,
// logged as asked by the watch, counted; one during a reload is queued,
// and a failed reload leaves the next change free to start one.
func TestWatchChanged(t *testing.T) {
	clock := time.Unix(1000, 0)
	m := New(Options{MaxDraining: 3, ReadyTimeout: time.Minute, DrainTimeout: time.Minute, StopSignal: "SIGTERM", First: 1})
	m.now = func() time.Time { return clock }
	g1, g2, g3 := &gen.Gen{N: 1, PID: 101, Started: clock}, &gen.Gen{N: 2, PID: 102, Started: clock}, &gen.Gen{N: 3, PID: 103, Started: clock}
	m.Step(gen.EvStart{})
	m.Step(gen.EvSpawned{G: g1})
	m.Step(gen.EvReady{G: g1})

	acts := m.Step(gen.EvWatchChanged{Paths: []string{"/etc/app.conf"}})
	if got := names(acts); !slices.Contains(got, "log:reload.asked") || !slices.Contains(got, "spawn 2") {
		t.Fatalf("EvWatchChanged: %v, want a reload asked and generation 2 spawned", got)
	}
	for _, a := range acts {
		if l, ok := a.(gen.ActLog); ok && l.Event == "reload.asked" && fmt.Sprint(l.Args) != "[by watch paths [/etc/app.conf]]" {
			t.Errorf("reload.asked args %v, want by=watch and the paths", l.Args)
		}
	}
	m.Step(gen.EvSpawned{G: g2})
	if got := names(m.Step(gen.EvWatchChanged{Paths: []string{"/etc/app.conf"}})); !slices.Contains(got, "log:reload.queued") {
		t.Fatalf("EvWatchChanged during a reload: %v, want it queued", got)
	}
	// Generation 2 fails: generation 1 serves on, and the queued reload
	// starts generation 3.
	if got := names(m.Step(gen.EvExited{G: g2, How: "exit status 1"})); !slices.Contains(got, "spawn 3") {
		t.Fatalf("generation 2 failed with a reload queued: %v, want generation 3 spawned", got)
	}
	if cur := m.View().Current; cur != g1 {
		t.Fatalf("serving %v after a failed reload, want generation 1", cur)
	}
	m.Step(gen.EvSpawned{G: g3})
	m.Step(gen.EvReady{G: g3})
	if v := m.View(); v.WatchReloads != 2 || v.Current != g3 {
		t.Fatalf("WatchReloads %d, serving %v; want 2, generation 3", v.WatchReloads, v.Current)
	}
}
