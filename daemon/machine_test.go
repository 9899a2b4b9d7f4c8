//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/doors"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/sealed"
)

// names lists actions as short strings: the message of a log, the signal
// sent to which generation, the event a timer will send.
func names(acts []action) []string {
	var out []string
	for _, a := range acts {
		switch a := a.(type) {
		case actLog:
			out = append(out, "log:"+a.event)
		case actSpawn:
			out = append(out, fmt.Sprintf("spawn %d", a.n))
		case actSignal:
			out = append(out, fmt.Sprintf("signal %d %s", a.g.n, config.SignalName(a.sig)))
		case actAfter:
			out = append(out, fmt.Sprintf("after %T", a.ev))
		case actNotify:
			out = append(out, "notify "+a.kind)
		case actReply:
			n := 0
			for _, w := range a.ws {
				if w != nil {
					n++
				}
			}
			if n > 0 {
				r := "ok"
				if !a.r.OK {
					r = a.r.Error
				}
				out = append(out, fmt.Sprintf("reply%d %s", n, r))
			}
		case actRelease:
			out = append(out, fmt.Sprintf("release %d", a.g.n))
		case actCancelReady:
			out = append(out, fmt.Sprintf("cancel %d", a.g.n))
		case actDone:
			out = append(out, fmt.Sprintf("done %d", a.code))
		default:
			out = append(out, strings.TrimPrefix(fmt.Sprintf("%T", a), "daemon.act"))
		}
	}
	return out
}

// TestMachine drives the supervisor's machine through the generation states
// of the package documentation, one sequence of events per case.
func TestMachine(t *testing.T) {
	clock := time.Unix(1000, 0)
	gens := map[int]*generation{}
	gen := func(n int) *generation {
		if gens[n] == nil {
			gens[n] = &generation{n: n, pid: 100 + n, started: clock}
		}
		return gens[n]
	}
	type step struct {
		ev   func() event // built when the case runs, with its generations
		want []string
	}
	w := make(chan ReloadResult, 8)
	cases := []struct {
		name  string
		bake  time.Duration
		delay time.Duration
		pid1  bool
		// setup is the events that bring the machine to generation 1
		// serving, when true.
		serving bool
		steps   []step
	}{
		{"first start", 0, 0, false, false, []step{
			{func() event { return evStart{} }, []string{"spawn 1"}},
			{func() event { return evSpawned{gen(1)} }, []string{"log:generation.started"}},
			{func() event { return evReady{gen(1)} }, []string{"log:generation.ready", "UpgraderReady", "notify status"}},
		}},
		{"the program fails at start: handoff exits 1", 0, 0, false, false, []step{
			{func() event { return evStart{} }, []string{"spawn 1"}},
			{func() event { return evSpawned{gen(1)} }, []string{"log:generation.started"}},
			{func() event { return evExited{gen(1), errors.New("exit status 2")} }, []string{"release 1", "log:generation.failed", "log:program.failed", "notify stopping", "ReleaseSockets", "done 1"}},
		}},
		{"a reload: the new generation is ready, the old drains", 0, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evSignal{syscall.SIGHUP} }, []string{"log:reload.asked", "log:reload.queued"}},
			{func() event { return evReady{gen(2)} }, []string{"log:generation.ready", "signal 1 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "notify ready", "log:reload.done", "reply1 ok", "log:reload.dequeued", "notify reloading", "notify extend", "spawn 3"}},
			{func() event { return evSpawned{gen(3)} }, []string{"log:generation.started"}},
			{func() event { return evExited{gen(1), nil} }, []string{"release 1", "log:generation.exited"}},
		}},
		{"a broken release fails the reload; the old one serves on", 0, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evExited{gen(2), errors.New("exit status 3")} }, []string{"release 2", "log:generation.failed", "notify ready", "reply1 reload failed: generation 2 (pid 102) exited before it was ready (exit status 3)"}},
		}},
		{"not ready in time: killed, then failed", 0, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evNotReady{gen(2), errNoReadyNotify} }, []string{"log:generation.not_ready", "signal 2 SIGKILL"}},
			{func() event { return evExited{gen(2), errors.New("signal: killed")} }, []string{"release 2", "log:generation.failed", "notify ready", "reply1 reload failed: generation 2 (pid 102) was not ready within 1m0s (--ready-timeout): " + errNoReadyNotify.Error()}},
		}},
		{"bake: the old generation serves until the window ends", time.Second, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGHUP} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evReady{gen(2)} }, []string{"log:generation.ready", "log:bake.started", "after daemon.evBakeDone", "WatchBake"}},
			{func() event { return evExtendTick{} }, []string{"notify extend", "after daemon.evExtendTick"}},
			{func() event { return evBakeDone{gen(2)} }, []string{"log:bake.done", "signal 1 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "notify ready", "log:reload.done"}},
		}},
		{"the serving generation exits: restarted after a backoff", 0, 0, false, true, []step{
			{func() event { return evExited{gen(1), errors.New("exit status 1")} }, []string{"release 1", "log:generation.crashed", "log:restart.scheduled", "after daemon.evRestartDue"}},
			{func() event { return evRestartDue{} }, []string{"spawn 2"}},
			{func() event { return evSpawnFailed{errors.New("fork: no memory"), 2, 0} }, []string{"log:restart.failed", "log:restart.scheduled", "after daemon.evRestartDue"}},
		}},
		{"stop: every generation drains, then handoff exits 0; again kills", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() event { return evReload{w} }, []string{"log:reload.asked", "reply1 handoff is stopping"}},
			{func() event { return evDoorsClosed{doors.Result{Held: 1}} }, []string{"log:stop.held_back", "cancel 1", "signal 1 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "ReleaseSockets"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.kill", "signal 1 SIGKILL"}},
			{func() event { return evExited{gen(1), nil} }, []string{"release 1", "log:generation.exited", "done 3"}},
		}},
		{"a stop where handoff cannot read its parent's descriptors leaves the sockets alone, and says so", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() event {
				return evDoorsClosed{doors.Result{Left: []string{"127.0.0.1:8080"}, ParentUnknown: true}}
			}, []string{"log:stop.sockets_unknown",
				"cancel 1", "signal 1 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "ReleaseSockets"}},
		}},
		{"stop signal again while new connections are held back: killed, then the sockets released", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.kill", "signal 1 SIGKILL"}},
			{func() event { return evDoorsClosed{doors.Result{Held: 1, Queued: 2, Left: []string{"systemd:web"}}} }, []string{"log:stop.sockets_kept",
				"log:stop.queued_left", "ReleaseSockets"}},
			{func() event { return evExited{gen(1), errors.New("signal: killed")} }, []string{"release 1", "log:generation.exited", "done 3"}},
		}},
		{"stop delay: serve on, refuse reloads, then drain; a second signal skips it", 0, 2 * time.Second, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.delayed", "notify stopping", "after daemon.evStopDelayOver"}},
			{func() event { return evReload{w} }, []string{"log:reload.asked", "log:reload.refused", "reply1 handoff is stopping"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.delay_skipped", "notify stopping", "CloseDoors"}},
			{func() event { return evStopDelayOver{} }, nil},
			{func() event { return evDoorsClosed{} }, []string{"cancel 1", "signal 1 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "ReleaseSockets"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.kill", "signal 1 SIGKILL"}},
		}},
		{"rollback with nothing before the current generation is refused", 0, 0, false, true, []step{
			{func() event { return evRollback{w} }, []string{"log:rollback.asked", "reply1 nothing to roll back to: no generation served before the current one"}},
		}},
		{"rollback during a bake stops the new generation; the old serves on", time.Second, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evReady{gen(2)} }, []string{"log:generation.ready", "log:bake.started", "after daemon.evBakeDone", "WatchBake"}},
			{func() event { return evRollback{w} }, []string{"log:rollback.asked", "log:rollback.stopping", "signal 2 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "notify ready", "reply1 reload failed: generation 2 (pid 102) was rolled back during its bake window", "reply1 ok"}},
			{func() event { return evBakeDone{gen(2)} }, nil},
		}},
		{"a generation that does not serve is rolled back during its bake; the old serves on", time.Second, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evReady{gen(2)} }, []string{"log:generation.ready", "log:bake.started", "after daemon.evBakeDone", "WatchBake"}},
			{func() event { return evBakeFailed{gen(2), "took no connection"} }, []string{"log:bake.failed", "signal 2 SIGTERM", "after daemon.evKillDue", "log:generation.draining", "notify ready", "reply1 reload failed: generation 2 (pid 102) failed its bake window: it took no connection"}},
			{func() event { return evBakeFailed{gen(2), "answers nothing"} }, nil},
			{func() event { return evBakeDone{gen(2)} }, nil},
		}},
		{"SIGUSR2 as PID 1 is refused", 0, 0, true, true, []step{
			{func() event { return evSignal{syscall.SIGUSR2} }, []string{"log:upgrade.refused"}},
		}},
		{"SIGUSR2 upgrades handoff; the new one took over: stop ours", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGUSR2} }, []string{"log:upgrade.asked", "SelfUpgrade"}},
			{func() event { return evSignal{syscall.SIGUSR2} }, []string{"log:upgrade.ignored"}},
			{func() event { return evSelfUpgradeDone{nil} }, []string{"SelfUpgradeEnded"}},
			{func() event { return evHandedOver{} }, []string{"log:upgrade.done", "cancel 1", "signal 1 SIGTERM", "after daemon.evKillDue", "log:generation.draining"}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clear(gens)
			m := &machine{bake: c.bake, stops: lifecycle.Stops{Delay: c.delay}, maxDraining: 3, readyTimeout: time.Minute, drainTimeout: 30 * time.Second,
				stopSignal: syscall.SIGTERM, pid1: c.pid1, now: func() time.Time { return clock }, nextN: 1}
			if c.serving {
				m.step(evStart{})
				m.step(evSpawned{gen(1)})
				m.step(evReady{gen(1)})
				if m.slots[0].cur != gen(1) {
					t.Fatal("generation 1 does not serve")
				}
			}
			killed := map[string]bool{} // each generation sent SIGKILL counts once in status
			for i, s := range c.steps {
				ev := s.ev()
				if got := names(m.step(ev)); !reflect.DeepEqual(got, s.want) && (len(got) > 0 || len(s.want) > 0) {
					t.Errorf("step %d %T:\n got %q\nwant %q", i, ev, got, s.want)
				}
				for _, a := range s.want {
					if strings.HasPrefix(a, "signal ") && strings.HasSuffix(a, " SIGKILL") {
						killed[a] = true
					}
				}
			}
			if m.killed != len(killed) {
				t.Errorf("machine counts %d generations killed, want %d", m.killed, len(killed))
			}
		})
	}
}

// TestSwitchesAreExhaustive: step handles every event, and the supervisor
// every action.
func TestSwitchesAreExhaustive(t *testing.T) {
	sealed.Check(t, ".", sealed.Switch{Marker: "isEvent", Fn: "step"}, sealed.Switch{Marker: "isAction", Fn: "apply"})
}

// TestMachineWorkers drives the machine with --workers 3 and --max-surge 1
// through a roll, a roll that fails halfway and puts back the workers it
// replaced, a worker's crash, and a replacement for --max-memory. After each
// step it checks the roll's two bounds: never fewer than 3 workers ready
// once the first start is over, never more than 4 processes.
func TestMachineWorkers(t *testing.T) {
	clock := time.Unix(1000, 0)
	type key struct{ n, w int }
	procs := map[key]*generation{}
	gw := func(n, w int) *generation {
		if procs[key{n, w}] == nil {
			procs[key{n, w}] = &generation{n: n, w: w, pid: 100*n + w, started: clock}
		}
		return procs[key{n, w}]
	}
	v1, v2 := &runSpec{Program: "/srv/v1/app"}, &runSpec{Program: "/srv/v2/app"}
	type step struct {
		ev   event
		want []string
	}
	w := make(chan ReloadResult, 8)
	newMachine := func() *machine {
		clear(procs)
		m := &machine{workers: 3, surge: 1, maxDraining: 3, readyTimeout: time.Minute, drainTimeout: 30 * time.Second,
			stopSignal: syscall.SIGTERM, now: func() time.Time { return clock }, nextN: 1}
		// The first start: every worker at once.
		if got := names(m.step(evStart{})); !reflect.DeepEqual(got, []string{"spawn 1"}) {
			t.Fatalf("start: %q", got)
		}
		for i := range 3 {
			gw(1, i).spec = v1
			acts := m.step(evSpawned{gw(1, i)})
			if want := i < 2; want != slices.ContainsFunc(acts, func(a action) bool { _, ok := a.(actSpawn); return ok }) {
				t.Fatalf("spawned worker %d: %q, want the next spawn %v", i, names(acts), want)
			}
		}
		for i := range 3 {
			got := names(m.step(evReady{gw(1, i)}))
			if i == 2 && !slices.Contains(got, "UpgraderReady") {
				t.Fatalf("the last worker ready: %q, want UpgraderReady", got)
			}
			if i < 2 && slices.Contains(got, "UpgraderReady") {
				t.Fatalf("worker %d ready: UpgraderReady before every worker is", i)
			}
		}
		return m
	}
	check := func(t *testing.T, m *machine, i int) {
		t.Helper()
		ready := 0
		for _, sl := range m.slots {
			if sl.cur != nil && sl.cur.state == serving {
				ready++
			}
		}
		if ready < 3 {
			t.Errorf("after step %d: %d workers ready, want 3", i, ready)
		}
		if len(m.gens) > 4 {
			t.Errorf("after step %d: %d processes, want at most 4", i, len(m.gens))
		}
	}
	run := func(t *testing.T, m *machine, steps []step) {
		t.Helper()
		for i, s := range steps {
			if got := names(m.step(s.ev)); !reflect.DeepEqual(got, s.want) && (len(got) > 0 || len(s.want) > 0) {
				t.Errorf("step %d %T:\n got %q\nwant %q", i, s.ev, got, s.want)
			}
			check(t, m, i)
		}
	}
	drained := []string{"signal %d SIGTERM", "after daemon.evKillDue", "log:generation.draining"}
	drains := func(n int) []string {
		return []string{fmt.Sprintf(drained[0], n), drained[1], drained[2]}
	}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	t.Run("a reload rolls one worker at a time", func(t *testing.T) {
		m := newMachine()
		for i := range 3 {
			gw(2, i).spec = v2
		}
		run(t, m, []step{
			{evReload{w}, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{evSpawned{gw(2, 0)}, []string{"log:generation.started"}},
			{evReady{gw(2, 0)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify status"})},
			// Worker 1 waits: the old worker 0 still drains.
			{evExited{gw(1, 0), nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{evSpawned{gw(2, 1)}, []string{"log:generation.started"}},
			{evReady{gw(2, 1)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify status"})},
			{evExited{gw(1, 1), nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{evSpawned{gw(2, 2)}, []string{"log:generation.started"}},
			{evReady{gw(2, 2)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify ready", "log:reload.done", "reply1 ok"})},
		})
		if m.previous != v1 {
			t.Errorf("rollback would run %v, want v1", m.previous)
		}
	})

	t.Run("a new worker that fails halfway: the replaced ones are put back", func(t *testing.T) {
		m := newMachine()
		for i := range 3 {
			gw(2, i).spec = v2
			gw(3, i).spec = v1
		}
		run(t, m, []step{
			{evReload{w}, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{evSpawned{gw(2, 0)}, []string{"log:generation.started"}},
			{evReady{gw(2, 0)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify status"})},
			{evExited{gw(1, 0), nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{evSpawned{gw(2, 1)}, []string{"log:generation.started"}},
			// Worker 1 of the new release dies before it is ready: worker 0
			// goes back to v1, under generation 3.
			{evExited{gw(2, 1), errors.New("exit status 3")}, []string{"release 2", "log:generation.failed", "log:reload.putting_back", "spawn 3"}},
			{evSpawned{gw(3, 0)}, []string{"log:generation.started"}},
			{evReady{gw(3, 0)}, cat([]string{"log:generation.ready"}, drains(2), []string{"notify ready", "reply1 reload failed: generation 2 worker 1 (pid 201) exited before it was ready (exit status 3); put back the 1 worker it had replaced"})},
		})
		for i, sl := range m.slots {
			if sl.cur == nil || sl.cur.spec != v1 {
				t.Errorf("worker %d runs %+v, want v1", i, sl.cur)
			}
		}
	})

	t.Run("a worker that crashes is restarted alone; one that keeps crashing is reported", func(t *testing.T) {
		m := newMachine()
		m.step(evExited{gw(1, 1), errors.New("exit status 1")})
		if m.slots[0].cur == nil || m.slots[2].cur == nil {
			t.Fatal("the other workers stopped serving")
		}
		var got []string
		for i := range failingAfter - 1 {
			got = names(m.step(evRestartDue{1}))
			g := gw(2+i, 1)
			if !reflect.DeepEqual(got, []string{fmt.Sprintf("spawn %d", 2+i)}) {
				t.Fatalf("restart %d: %q", i+1, got)
			}
			m.step(evSpawned{g})
			m.step(evReady{g})
			got = names(m.step(evExited{g, errors.New("exit status 1")}))
		}
		if !slices.Contains(got, "log:worker.failing") || m.slots[1].backoff != 1600*time.Millisecond || m.slots[1].restarts != failingAfter-1 {
			t.Errorf("after %d crashes in a row: %q, backoff %v, %d restarts; want worker.failing, 1.6s, %d", failingAfter, got, m.slots[1].backoff, m.slots[1].restarts, failingAfter-1)
		}
		if st := m.servingStatus(); !strings.Contains(st, "worker 1 keeps crashing") {
			t.Errorf("status %q does not say worker 1 keeps crashing", st)
		}
	})

	t.Run("a worker past --max-memory is replaced, the new one ready first", func(t *testing.T) {
		m := newMachine()
		m.maxMemory = 100 << 20
		gw(2, 1).spec = v1
		run(t, m, []step{
			{evMemSample{map[*generation]int64{gw(1, 0): 50 << 20, gw(1, 1): 150 << 20, gw(1, 2): 60 << 20}}, []string{"log:worker.over_memory", "spawn 2", "after daemon.evMemTick"}},
			{evSpawned{gw(2, 1)}, []string{"log:generation.started"}},
			{evMemTick{}, []string{"Measure"}},
			{evMemSample{map[*generation]int64{gw(1, 1): 160 << 20}}, []string{"after daemon.evMemTick"}},
			{evReady{gw(2, 1)}, cat([]string{"log:generation.ready"}, drains(1), []string{"log:worker.replaced", "notify status"})},
		})
		if m.slots[1].cur != gw(2, 1) || m.slots[1].cur.spec != v1 {
			t.Error("worker 1 was not replaced by one that runs what it ran")
		}
	})

	t.Run("a worker shown hung is paused and replaced, the new one ready first and not baked; one replacement at a time", func(t *testing.T) {
		m := newMachine()
		m.bake = time.Minute // not for a hung process's replacement
		gw(2, 1).spec = v1
		hung := evUnresponsive{gw(1, 1), "answers nothing", []any{"waiting", 5}}
		run(t, m, []step{
			{hung, []string{"log:worker.unresponsive", "Pause", "spawn 2"}},
			// Reported again while its replacement starts: nothing more.
			{hung, nil},
			// Another worker is reported meanwhile: one replacement at a time.
			{evUnresponsive{gw(1, 2), "answers nothing", nil}, nil},
			{evSpawned{gw(2, 1)}, []string{"log:generation.started"}},
			{evReady{gw(2, 1)}, cat([]string{"log:generation.ready", "Pause"}, drains(1), []string{"log:worker.replaced", "notify status"})},
		})
		if m.slots[1].cur != gw(2, 1) || m.slots[1].unresponsive != 1 || m.counts.unresponsive != 1 || !gw(2, 1).forHung {
			t.Errorf("worker 1: serving %v, %d replaced as hung (%d in all)", m.slots[1].cur, m.slots[1].unresponsive, m.counts.unresponsive)
		}
		if st := m.servingStatus(); !strings.Contains(st, "serving 3 of 3") {
			t.Errorf("status %q", st)
		}
	})

	t.Run("a hung worker whose replacement fails is resumed, and serves on", func(t *testing.T) {
		m := newMachine()
		run(t, m, []step{
			{evUnresponsive{gw(1, 0), "takes no connection", nil}, []string{"log:worker.unresponsive", "Pause", "spawn 2"}},
			{evSpawnFailed{errors.New("no such file"), 2, 0}, []string{"log:reload.failed", "log:worker.replace_failed", "Pause"}},
		})
		if gw(1, 0).unresponsive || m.slots[0].cur != gw(1, 0) || m.roll != nil {
			t.Errorf("worker 0 after the failed replacement: %+v, roll %v", m.slots[0].cur, m.roll)
		}
	})

	t.Run("a replacement that hangs again at once is said once and replaced only after it served stableAfter", func(t *testing.T) {
		m := newMachine()
		gw(2, 1).spec, gw(3, 1).spec = v1, v1
		m.step(evUnresponsive{gw(1, 1), "answers nothing", nil})
		m.step(evSpawned{gw(2, 1)})
		m.step(evReady{gw(2, 1)})
		var all []string
		for range 3 {
			all = append(all, names(m.step(evUnresponsive{gw(2, 1), "answers nothing", nil}))...)
		}
		if n := strings.Count(strings.Join(all, " "), "log:worker.unresponsive_again"); n != 1 || slices.Contains(all, "spawn 3") {
			t.Errorf("%q: want one worker.unresponsive_again and no spawn", all)
		}
		clock = clock.Add(stableAfter)
		defer func() { clock = clock.Add(-stableAfter) }()
		if got := names(m.step(evUnresponsive{gw(2, 1), "answers nothing", nil})); !slices.Contains(got, "spawn 3") {
			t.Errorf("after stableAfter: %q, want it replaced", got)
		}
	})

	t.Run("no worker is replaced as hung while a reload rolls or handoff stops", func(t *testing.T) {
		m := newMachine()
		m.step(evReload{w})
		if got := names(m.step(evUnresponsive{gw(1, 2), "answers nothing", nil})); len(got) != 0 {
			t.Errorf("during a reload: %q", got)
		}
		m = newMachine()
		m.step(evSignal{syscall.SIGTERM})
		if got := names(m.step(evUnresponsive{gw(1, 2), "answers nothing", nil})); len(got) != 0 {
			t.Errorf("during a stop: %q", got)
		}
	})

	t.Run("a put-back waits until the new worker rolled back in its bake has exited: never more than 4 processes", func(t *testing.T) {
		m := newMachine()
		m.bake = time.Second
		for i := range 3 {
			gw(2, i).spec = v2
			gw(3, i).spec = v1
		}
		bakes := []string{"log:generation.ready", "log:bake.started", "after daemon.evBakeDone", "WatchBake"}
		run(t, m, []step{
			{evReload{w}, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.evExtendTick", "spawn 2"}},
			{evSpawned{gw(2, 0)}, []string{"log:generation.started"}},
			{evReady{gw(2, 0)}, bakes},
			{evBakeDone{gw(2, 0)}, cat([]string{"log:bake.done"}, drains(1), []string{"notify status"})},
			{evExited{gw(1, 0), nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{evSpawned{gw(2, 1)}, []string{"log:generation.started"}},
			{evReady{gw(2, 1)}, bakes},
			// Worker 1 of v2 fails its bake: it drains, and worker 0 is put
			// back only once it has exited.
			{evBakeFailed{gw(2, 1), "took no connection"}, cat([]string{"log:bake.failed"}, drains(2), []string{"log:reload.putting_back"})},
			{evExited{gw(2, 1), nil}, []string{"release 2", "log:generation.exited", "spawn 3"}},
			{evSpawned{gw(3, 0)}, []string{"log:generation.started"}},
		})
	})

	t.Run("a new worker that crashes once it serves, before the roll ends: the roll ends, the worker restarts", func(t *testing.T) {
		m := newMachine()
		var all []string
		for _, ev := range []event{
			evReload{w},
			evSpawned{gw(2, 0)}, evReady{gw(2, 0)}, evExited{gw(1, 0), nil},
			evSpawned{gw(2, 1)}, evReady{gw(2, 1)}, evExited{gw(1, 1), nil},
			evSpawned{gw(2, 2)},
			evExited{gw(2, 0), errors.New("exit status 1")}, // serving, it crashes
			evReady{gw(2, 2)},
		} {
			all = append(all, names(m.step(ev))...)
		}
		if !slices.Contains(all, "reply1 ok") || !slices.Contains(all, "after daemon.evRestartDue") {
			t.Errorf("%q: want the reload done and worker 0 restarting", all)
		}
		if m.roll != nil || m.slots[0].cur != nil || m.slots[1].cur != gw(2, 1) || m.slots[2].cur != gw(2, 2) {
			t.Errorf("after the roll: roll %v, workers %v %v %v", m.roll, m.slots[0].cur, m.slots[1].cur, m.slots[2].cur)
		}
	})

	t.Run("a reload while a worker crash-loops replaces it too", func(t *testing.T) {
		m := newMachine()
		steps := []event{
			evExited{gw(1, 1), errors.New("exit status 1")},
			evRestartDue{1}, evSpawned{gw(2, 1)},
			evReload{w}, // queued behind the restart
			evExited{gw(2, 1), errors.New("exit status 1")}, // the restart fails: the reload starts
			evSpawned{gw(3, 0)}, evReady{gw(3, 0)}, evExited{gw(1, 0), nil},
			evSpawned{gw(3, 1)}, evReady{gw(3, 1)},
			evSpawned{gw(3, 2)}, evReady{gw(3, 2)},
			evRestartDue{1}, // too late: worker 1 serves
		}
		var all []string
		for _, ev := range steps {
			all = append(all, names(m.step(ev))...)
		}
		for i, sl := range m.slots {
			if sl.cur == nil || sl.cur.n != 3 {
				t.Errorf("worker %d: %+v, want generation 3 serving", i, sl.cur)
			}
		}
		if !slices.Contains(all, "reply1 ok") || !slices.Contains(all, "log:reload.dequeued") {
			t.Errorf("the queued reload did not run to its end: %q", all)
		}
	})

	t.Run("a worker replaced for its memory and over it again at once is left serving, said once", func(t *testing.T) {
		m := newMachine()
		m.maxMemory = 100 << 20
		m.step(evMemSample{map[*generation]int64{gw(1, 1): 150 << 20}})
		m.step(evSpawned{gw(2, 1)})
		m.step(evReady{gw(2, 1)})
		var all []string
		for range 3 {
			m.step(evMemTick{})
			all = append(all, names(m.step(evMemSample{map[*generation]int64{gw(2, 1): 150 << 20}}))...)
		}
		if n := strings.Count(strings.Join(all, " "), "log:worker.memory_too_low"); n != 1 || slices.ContainsFunc(all, func(a string) bool { return strings.HasPrefix(a, "spawn") }) {
			t.Errorf("%q: want one worker.memory_too_low and no spawn", all)
		}
	})
}
