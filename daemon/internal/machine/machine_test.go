package machine

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/sealed"
)

// names lists actions as short strings: the message of a log, the signal
// sent to which generation, the event a timer will send.
// neverNotified is what the supervisor says of a process that never sent
// READY=1 when --ready notify waited for it.
const neverNotified = "it never sent READY=1 to $NOTIFY_SOCKET — for a program that does not, use --ready accept"

func names(acts []gen.Action) []string {
	var out []string
	for _, a := range acts {
		switch a := a.(type) {
		case gen.ActLog:
			out = append(out, "log:"+a.Event)
		case gen.ActSpawn:
			out = append(out, fmt.Sprintf("spawn %d", a.N))
		case gen.ActSignal:
			out = append(out, fmt.Sprintf("signal %d %s", a.G.N, a.Sig))
		case gen.ActAfter:
			out = append(out, fmt.Sprintf("after %T", a.Ev))
		case gen.ActNotify:
			out = append(out, "notify "+a.Kind)
		case gen.ActReply:
			n := 0
			for _, w := range a.WS {
				if w != nil {
					n++
				}
			}
			if n > 0 {
				r := "ok"
				if !a.R.OK {
					r = a.R.Error
				}
				out = append(out, fmt.Sprintf("reply%d %s", n, r))
			}
		case gen.ActRelease:
			out = append(out, fmt.Sprintf("release %d", a.G.N))
		case gen.ActCancelReady:
			out = append(out, fmt.Sprintf("cancel %d", a.G.N))
		case gen.ActDone:
			out = append(out, fmt.Sprintf("done %d", a.Code))
		default:
			out = append(out, strings.TrimPrefix(fmt.Sprintf("%T", a), "gen.Act"))
		}
	}
	return out
}

// TestMachine drives the supervisor's machine through the generation states
// of the package documentation, one sequence of events per case.
func TestMachine(t *testing.T) {
	clock := time.Unix(1000, 0)
	gens := map[int]*gen.Gen{}
	mk := func(n int) *gen.Gen {
		if gens[n] == nil {
			gens[n] = &gen.Gen{N: n, PID: 100 + n, Started: clock}
		}
		return gens[n]
	}
	type step struct {
		ev   func() gen.Event // built when the case runs, with its generations
		want []string
	}
	w := make(chan gen.ReloadResult, 8)
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
			{func() gen.Event { return gen.EvStart{} }, []string{"spawn 1"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(1)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvReady{G: mk(1)} }, []string{"log:generation.ready", "UpgraderReady", "notify status"}},
		}},
		{"the program fails at start: handoff exits 1", 0, 0, false, false, []step{
			{func() gen.Event { return gen.EvStart{} }, []string{"spawn 1"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(1)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvExited{G: mk(1), Err: errors.New("exit status 2")} }, []string{"release 1", "log:generation.failed", "log:program.failed", "notify stopping", "ReleaseSockets", "done 1"}},
		}},
		{"a reload: the new generation is ready, the old drains", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(2)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvSignal{Sig: "SIGHUP"} }, []string{"log:reload.asked", "log:reload.queued"}},
			{func() gen.Event { return gen.EvReady{G: mk(2)} }, []string{"log:generation.ready", "signal 1 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "notify ready", "log:reload.done", "reply1 ok", "log:reload.dequeued", "notify reloading", "notify extend", "spawn 3"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(3)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvExited{G: mk(1), Err: nil} }, []string{"release 1", "log:generation.exited"}},
		}},
		{"a broken release fails the reload; the old one serves on", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(2)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvExited{G: mk(2), Err: errors.New("exit status 3")} }, []string{"release 2", "log:generation.failed", "notify ready", "reply1 reload failed: generation 2 (pid 102) exited before it was ready (exit status 3)"}},
		}},
		{"not ready in time: killed, then failed", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(2)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvNotReady{G: mk(2), Why: neverNotified} }, []string{"log:generation.not_ready", "signal 2 SIGKILL"}},
			{func() gen.Event { return gen.EvExited{G: mk(2), Err: errors.New("signal: killed")} }, []string{"release 2", "log:generation.failed", "notify ready", "reply1 reload failed: generation 2 (pid 102) was not ready within 1m0s (--ready-timeout): " + neverNotified}},
		}},
		{"bake: the old generation serves until the window ends", time.Second, 0, false, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGHUP"} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(2)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvReady{G: mk(2)} }, []string{"log:generation.ready", "log:bake.started", "after gen.EvBakeDone", "WatchBake"}},
			{func() gen.Event { return gen.EvExtendTick{} }, []string{"notify extend", "after gen.EvExtendTick"}},
			{func() gen.Event { return gen.EvBakeDone{G: mk(2)} }, []string{"log:bake.done", "signal 1 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "notify ready", "log:reload.done"}},
		}},
		{"the serving generation exits: restarted after a backoff", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvExited{G: mk(1), Err: errors.New("exit status 1")} }, []string{"release 1", "log:generation.crashed", "log:restart.scheduled", "after gen.EvRestartDue"}},
			{func() gen.Event { return gen.EvRestartDue{} }, []string{"spawn 2"}},
			{func() gen.Event { return gen.EvSpawnFailed{Err: errors.New("fork: no memory"), N: 2, W: 0} }, []string{"log:restart.failed", "log:restart.scheduled", "after gen.EvRestartDue"}},
		}},
		{"stop: every generation drains, then handoff exits 0; again kills", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "reply1 handoff is stopping"}},
			{func() gen.Event { return gen.EvDoorsClosed{Held: 1} }, []string{"log:stop.held_back", "cancel 1", "signal 1 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "ReleaseSockets"}},
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.kill", "signal 1 SIGKILL"}},
			{func() gen.Event { return gen.EvExited{G: mk(1), Err: nil} }, []string{"release 1", "log:generation.exited", "done 3"}},
		}},
		{"a stop where handoff cannot read its parent's descriptors leaves the sockets alone, and says so", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() gen.Event {
				return gen.EvDoorsClosed{Left: []string{"127.0.0.1:8080"}, ParentUnknown: true}
			}, []string{"log:stop.sockets_unknown",
				"cancel 1", "signal 1 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "ReleaseSockets"}},
		}},
		{"stop signal again while new connections are held back: killed, then the sockets released", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.kill", "signal 1 SIGKILL"}},
			{func() gen.Event { return gen.EvDoorsClosed{Held: 1, Queued: 2, Left: []string{"systemd:web"}} }, []string{"log:stop.sockets_kept",
				"log:stop.queued_left", "ReleaseSockets"}},
			{func() gen.Event { return gen.EvExited{G: mk(1), Err: errors.New("signal: killed")} }, []string{"release 1", "log:generation.exited", "done 3"}},
		}},
		{"stop delay: serve on, refuse reloads, then drain; a second signal skips it", 0, 2 * time.Second, false, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.delayed", "notify stopping", "after gen.EvStopDelayOver"}},
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "log:reload.refused", "reply1 handoff is stopping"}},
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.delay_skipped", "notify stopping", "CloseDoors"}},
			{func() gen.Event { return gen.EvStopDelayOver{} }, nil},
			{func() gen.Event { return gen.EvDoorsClosed{} }, []string{"cancel 1", "signal 1 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "ReleaseSockets"}},
			{func() gen.Event { return gen.EvSignal{Sig: "SIGTERM"} }, []string{"log:stop.kill", "signal 1 SIGKILL"}},
		}},
		{"rollback with nothing before the current generation is refused", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvRollback{W: w} }, []string{"log:rollback.asked", "reply1 nothing to roll back to: no generation served before the current one"}},
		}},
		{"rollback during a bake stops the new generation; the old serves on", time.Second, 0, false, true, []step{
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(2)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvReady{G: mk(2)} }, []string{"log:generation.ready", "log:bake.started", "after gen.EvBakeDone", "WatchBake"}},
			{func() gen.Event { return gen.EvRollback{W: w} }, []string{"log:rollback.asked", "log:rollback.stopping", "signal 2 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "notify ready", "reply1 reload failed: generation 2 (pid 102) was rolled back during its bake window", "reply1 ok"}},
			{func() gen.Event { return gen.EvBakeDone{G: mk(2)} }, nil},
		}},
		{"a generation that does not serve is rolled back during its bake; the old serves on", time.Second, 0, false, true, []step{
			{func() gen.Event { return gen.EvReload{W: w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{func() gen.Event { return gen.EvSpawned{G: mk(2)} }, []string{"log:generation.started"}},
			{func() gen.Event { return gen.EvReady{G: mk(2)} }, []string{"log:generation.ready", "log:bake.started", "after gen.EvBakeDone", "WatchBake"}},
			{func() gen.Event { return gen.EvBakeFailed{G: mk(2), Reason: "took no connection"} }, []string{"log:bake.failed", "signal 2 SIGTERM", "after gen.EvKillDue", "log:generation.draining", "notify ready", "reply1 reload failed: generation 2 (pid 102) failed its bake window: it took no connection"}},
			{func() gen.Event { return gen.EvBakeFailed{G: mk(2), Reason: "answers nothing"} }, nil},
			{func() gen.Event { return gen.EvBakeDone{G: mk(2)} }, nil},
		}},
		{"SIGUSR2 as PID 1 is refused", 0, 0, true, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGUSR2"} }, []string{"log:upgrade.refused"}},
		}},
		{"SIGUSR2 upgrades handoff; the new one took over: stop ours", 0, 0, false, true, []step{
			{func() gen.Event { return gen.EvSignal{Sig: "SIGUSR2"} }, []string{"log:upgrade.asked", "SelfUpgrade"}},
			{func() gen.Event { return gen.EvSignal{Sig: "SIGUSR2"} }, []string{"log:upgrade.ignored"}},
			{func() gen.Event { return gen.EvSelfUpgradeDone{Err: nil} }, []string{"SelfUpgradeEnded"}},
			{func() gen.Event { return gen.EvHandedOver{} }, []string{"log:upgrade.done", "cancel 1", "signal 1 SIGTERM", "after gen.EvKillDue", "log:generation.draining"}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clear(gens)
			m := &Machine{bake: c.bake, stops: lifecycle.Stops{Delay: c.delay}, maxDraining: 3, readyTimeout: time.Minute, drainTimeout: 30 * time.Second,
				stopSignal: "SIGTERM", pid1: c.pid1, now: func() time.Time { return clock }, nextN: 1}
			if c.serving {
				m.Step(gen.EvStart{})
				m.Step(gen.EvSpawned{G: mk(1)})
				m.Step(gen.EvReady{G: mk(1)})
				if m.slots[0].cur != mk(1) {
					t.Fatal("generation 1 does not serve")
				}
			}
			killed := map[string]bool{} // each generation sent SIGKILL counts once in status
			for i, s := range c.steps {
				ev := s.ev()
				if got := names(m.Step(ev)); !reflect.DeepEqual(got, s.want) && (len(got) > 0 || len(s.want) > 0) {
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

// TestSwitchesAreExhaustive: Step handles every event (package gen's), and
// the supervisor (carryOut) every action.
func TestSwitchesAreExhaustive(t *testing.T) {
	sealed.Check(t, "../gen", sealed.Switch{Marker: "isEvent", Fn: "Step", In: "."}, sealed.Switch{Marker: "isAction", Fn: "carryOut", In: "../supervisor"})
}

// TestMachineWorkers drives the machine with --workers 3 and --max-surge 1
// through a roll, a roll that fails halfway and puts back the workers it
// replaced, a worker's crash, and a replacement for --max-memory. After each
// step it checks the roll's two bounds: never fewer than 3 workers ready
// once the first start is over, never more than 4 processes.
func TestMachineWorkers(t *testing.T) {
	clock := time.Unix(1000, 0)
	type key struct{ n, w int }
	procs := map[key]*gen.Gen{}
	gw := func(n, w int) *gen.Gen {
		if procs[key{n, w}] == nil {
			procs[key{n, w}] = &gen.Gen{N: n, W: w, PID: 100*n + w, Started: clock}
		}
		return procs[key{n, w}]
	}
	v1, v2 := &gen.Spec{Program: "/srv/v1/app"}, &gen.Spec{Program: "/srv/v2/app"}
	type step struct {
		ev   gen.Event
		want []string
	}
	w := make(chan gen.ReloadResult, 8)
	newMachine := func() *Machine {
		clear(procs)
		m := &Machine{workers: 3, surge: 1, maxDraining: 3, readyTimeout: time.Minute, drainTimeout: 30 * time.Second,
			stopSignal: "SIGTERM", now: func() time.Time { return clock }, nextN: 1}
		// The first start: every worker at once.
		if got := names(m.Step(gen.EvStart{})); !reflect.DeepEqual(got, []string{"spawn 1"}) {
			t.Fatalf("start: %q", got)
		}
		for i := range 3 {
			gw(1, i).Spec = v1
			acts := m.Step(gen.EvSpawned{G: gw(1, i)})
			if want := i < 2; want != slices.ContainsFunc(acts, func(a gen.Action) bool { _, ok := a.(gen.ActSpawn); return ok }) {
				t.Fatalf("spawned worker %d: %q, want the next spawn %v", i, names(acts), want)
			}
		}
		for i := range 3 {
			got := names(m.Step(gen.EvReady{G: gw(1, i)}))
			if i == 2 && !slices.Contains(got, "UpgraderReady") {
				t.Fatalf("the last worker ready: %q, want UpgraderReady", got)
			}
			if i < 2 && slices.Contains(got, "UpgraderReady") {
				t.Fatalf("worker %d ready: UpgraderReady before every worker is", i)
			}
		}
		return m
	}
	check := func(t *testing.T, m *Machine, i int) {
		t.Helper()
		ready := 0
		for _, sl := range m.slots {
			if sl.cur != nil && sl.cur.State == gen.Serving {
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
	run := func(t *testing.T, m *Machine, steps []step) {
		t.Helper()
		for i, s := range steps {
			if got := names(m.Step(s.ev)); !reflect.DeepEqual(got, s.want) && (len(got) > 0 || len(s.want) > 0) {
				t.Errorf("step %d %T:\n got %q\nwant %q", i, s.ev, got, s.want)
			}
			check(t, m, i)
		}
	}
	drained := []string{"signal %d SIGTERM", "after gen.EvKillDue", "log:generation.draining"}
	drains := func(n int) []string {
		return []string{fmt.Sprintf(drained[0], n), drained[1], drained[2]}
	}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	t.Run("a reload rolls one worker at a time", func(t *testing.T) {
		m := newMachine()
		for i := range 3 {
			gw(2, i).Spec = v2
		}
		run(t, m, []step{
			{gen.EvReload{W: w}, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 0)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 0)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify status"})},
			// Worker 1 waits: the old worker 0 still drains.
			{gen.EvExited{G: gw(1, 0), Err: nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 1)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 1)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify status"})},
			{gen.EvExited{G: gw(1, 1), Err: nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 2)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 2)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify ready", "log:reload.done", "reply1 ok"})},
		})
		if m.previous != v1 {
			t.Errorf("rollback would run %v, want v1", m.previous)
		}
	})

	t.Run("a new worker that fails halfway: the replaced ones are put back", func(t *testing.T) {
		m := newMachine()
		for i := range 3 {
			gw(2, i).Spec = v2
			gw(3, i).Spec = v1
		}
		run(t, m, []step{
			{gen.EvReload{W: w}, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 0)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 0)}, cat([]string{"log:generation.ready"}, drains(1), []string{"notify status"})},
			{gen.EvExited{G: gw(1, 0), Err: nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 1)}, []string{"log:generation.started"}},
			// Worker 1 of the new release dies before it is ready: worker 0
			// goes back to v1, under generation 3.
			{gen.EvExited{G: gw(2, 1), Err: errors.New("exit status 3")}, []string{"release 2", "log:generation.failed", "log:reload.putting_back", "spawn 3"}},
			{gen.EvSpawned{G: gw(3, 0)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(3, 0)}, cat([]string{"log:generation.ready"}, drains(2), []string{"notify ready", "reply1 reload failed: generation 2 worker 1 (pid 201) exited before it was ready (exit status 3); put back the 1 worker it had replaced"})},
		})
		for i, sl := range m.slots {
			if sl.cur == nil || sl.cur.Spec != v1 {
				t.Errorf("worker %d runs %+v, want v1", i, sl.cur)
			}
		}
	})

	t.Run("a worker that crashes is restarted alone; one that keeps crashing is reported", func(t *testing.T) {
		m := newMachine()
		m.Step(gen.EvExited{G: gw(1, 1), Err: errors.New("exit status 1")})
		if m.slots[0].cur == nil || m.slots[2].cur == nil {
			t.Fatal("the other workers stopped serving")
		}
		var got []string
		for i := range failingAfter - 1 {
			got = names(m.Step(gen.EvRestartDue{W: 1}))
			g := gw(2+i, 1)
			if !reflect.DeepEqual(got, []string{fmt.Sprintf("spawn %d", 2+i)}) {
				t.Fatalf("restart %d: %q", i+1, got)
			}
			m.Step(gen.EvSpawned{G: g})
			m.Step(gen.EvReady{G: g})
			got = names(m.Step(gen.EvExited{G: g, Err: errors.New("exit status 1")}))
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
		gw(2, 1).Spec = v1
		run(t, m, []step{
			{gen.EvMemSample{RSS: map[*gen.Gen]int64{gw(1, 0): 50 << 20, gw(1, 1): 150 << 20, gw(1, 2): 60 << 20}}, []string{"log:worker.over_memory", "spawn 2", "after gen.EvMemTick"}},
			{gen.EvSpawned{G: gw(2, 1)}, []string{"log:generation.started"}},
			{gen.EvMemTick{}, []string{"Measure"}},
			{gen.EvMemSample{RSS: map[*gen.Gen]int64{gw(1, 1): 160 << 20}}, []string{"after gen.EvMemTick"}},
			{gen.EvReady{G: gw(2, 1)}, cat([]string{"log:generation.ready"}, drains(1), []string{"log:worker.replaced", "notify status"})},
		})
		if m.slots[1].cur != gw(2, 1) || m.slots[1].cur.Spec != v1 {
			t.Error("worker 1 was not replaced by one that runs what it ran")
		}
	})

	t.Run("a worker shown hung is paused and replaced, the new one ready first and not baked; one replacement at a time", func(t *testing.T) {
		m := newMachine()
		m.bake = time.Minute // not for a hung process's replacement
		gw(2, 1).Spec = v1
		hung := gen.EvUnresponsive{G: gw(1, 1), Reason: "answers nothing", Args: []any{"waiting", 5}}
		run(t, m, []step{
			{hung, []string{"log:worker.unresponsive", "Pause", "spawn 2"}},
			// Reported again while its replacement starts: nothing more.
			{hung, nil},
			// Another worker is reported meanwhile: one replacement at a time.
			{gen.EvUnresponsive{G: gw(1, 2), Reason: "answers nothing", Args: nil}, nil},
			{gen.EvSpawned{G: gw(2, 1)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 1)}, cat([]string{"log:generation.ready", "Pause"}, drains(1), []string{"log:worker.replaced", "notify status"})},
		})
		if m.slots[1].cur != gw(2, 1) || m.slots[1].unresponsive != 1 || m.counts.unresponsive != 1 || !gw(2, 1).ForHung {
			t.Errorf("worker 1: serving %v, %d replaced as hung (%d in all)", m.slots[1].cur, m.slots[1].unresponsive, m.counts.unresponsive)
		}
		if st := m.servingStatus(); !strings.Contains(st, "serving 3 of 3") {
			t.Errorf("status %q", st)
		}
	})

	t.Run("a hung worker whose replacement fails is resumed, and serves on", func(t *testing.T) {
		m := newMachine()
		run(t, m, []step{
			{gen.EvUnresponsive{G: gw(1, 0), Reason: "takes no connection", Args: nil}, []string{"log:worker.unresponsive", "Pause", "spawn 2"}},
			{gen.EvSpawnFailed{Err: errors.New("no such file"), N: 2, W: 0}, []string{"log:reload.failed", "log:worker.replace_failed", "Pause"}},
		})
		if gw(1, 0).Unresponsive || m.slots[0].cur != gw(1, 0) || m.roll != nil {
			t.Errorf("worker 0 after the failed replacement: %+v, roll %v", m.slots[0].cur, m.roll)
		}
	})

	t.Run("a replacement that hangs again at once is said once and replaced only after it served stableAfter", func(t *testing.T) {
		m := newMachine()
		gw(2, 1).Spec, gw(3, 1).Spec = v1, v1
		m.Step(gen.EvUnresponsive{G: gw(1, 1), Reason: "answers nothing", Args: nil})
		m.Step(gen.EvSpawned{G: gw(2, 1)})
		m.Step(gen.EvReady{G: gw(2, 1)})
		var all []string
		for range 3 {
			all = append(all, names(m.Step(gen.EvUnresponsive{G: gw(2, 1), Reason: "answers nothing", Args: nil}))...)
		}
		if n := strings.Count(strings.Join(all, " "), "log:worker.unresponsive_again"); n != 1 || slices.Contains(all, "spawn 3") {
			t.Errorf("%q: want one worker.unresponsive_again and no spawn", all)
		}
		clock = clock.Add(stableAfter)
		defer func() { clock = clock.Add(-stableAfter) }()
		if got := names(m.Step(gen.EvUnresponsive{G: gw(2, 1), Reason: "answers nothing", Args: nil})); !slices.Contains(got, "spawn 3") {
			t.Errorf("after stableAfter: %q, want it replaced", got)
		}
	})

	t.Run("no worker is replaced as hung while a reload rolls or handoff stops", func(t *testing.T) {
		m := newMachine()
		m.Step(gen.EvReload{W: w})
		if got := names(m.Step(gen.EvUnresponsive{G: gw(1, 2), Reason: "answers nothing", Args: nil})); len(got) != 0 {
			t.Errorf("during a reload: %q", got)
		}
		m = newMachine()
		m.Step(gen.EvSignal{Sig: "SIGTERM"})
		if got := names(m.Step(gen.EvUnresponsive{G: gw(1, 2), Reason: "answers nothing", Args: nil})); len(got) != 0 {
			t.Errorf("during a stop: %q", got)
		}
	})

	t.Run("a put-back waits until the new worker rolled back in its bake has exited: never more than 4 processes", func(t *testing.T) {
		m := newMachine()
		m.bake = time.Second
		for i := range 3 {
			gw(2, i).Spec = v2
			gw(3, i).Spec = v1
		}
		bakes := []string{"log:generation.ready", "log:bake.started", "after gen.EvBakeDone", "WatchBake"}
		run(t, m, []step{
			{gen.EvReload{W: w}, []string{"log:reload.asked", "notify reloading", "notify extend", "after gen.EvExtendTick", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 0)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 0)}, bakes},
			{gen.EvBakeDone{G: gw(2, 0)}, cat([]string{"log:bake.done"}, drains(1), []string{"notify status"})},
			{gen.EvExited{G: gw(1, 0), Err: nil}, []string{"release 1", "log:generation.exited", "spawn 2"}},
			{gen.EvSpawned{G: gw(2, 1)}, []string{"log:generation.started"}},
			{gen.EvReady{G: gw(2, 1)}, bakes},
			// Worker 1 of v2 fails its bake: it drains, and worker 0 is put
			// back only once it has exited.
			{gen.EvBakeFailed{G: gw(2, 1), Reason: "took no connection"}, cat([]string{"log:bake.failed"}, drains(2), []string{"log:reload.putting_back"})},
			{gen.EvExited{G: gw(2, 1), Err: nil}, []string{"release 2", "log:generation.exited", "spawn 3"}},
			{gen.EvSpawned{G: gw(3, 0)}, []string{"log:generation.started"}},
		})
	})

	t.Run("a new worker that crashes once it serves, before the roll ends: the roll ends, the worker restarts", func(t *testing.T) {
		m := newMachine()
		var all []string
		for _, ev := range []gen.Event{
			gen.EvReload{W: w},
			gen.EvSpawned{G: gw(2, 0)}, gen.EvReady{G: gw(2, 0)}, gen.EvExited{G: gw(1, 0), Err: nil},
			gen.EvSpawned{G: gw(2, 1)}, gen.EvReady{G: gw(2, 1)}, gen.EvExited{G: gw(1, 1), Err: nil},
			gen.EvSpawned{G: gw(2, 2)},
			gen.EvExited{G: gw(2, 0), Err: errors.New("exit status 1")}, // serving, it crashes
			gen.EvReady{G: gw(2, 2)},
		} {
			all = append(all, names(m.Step(ev))...)
		}
		if !slices.Contains(all, "reply1 ok") || !slices.Contains(all, "after gen.EvRestartDue") {
			t.Errorf("%q: want the reload done and worker 0 restarting", all)
		}
		if m.roll != nil || m.slots[0].cur != nil || m.slots[1].cur != gw(2, 1) || m.slots[2].cur != gw(2, 2) {
			t.Errorf("after the roll: roll %v, workers %v %v %v", m.roll, m.slots[0].cur, m.slots[1].cur, m.slots[2].cur)
		}
	})

	t.Run("a reload while a worker crash-loops replaces it too", func(t *testing.T) {
		m := newMachine()
		steps := []gen.Event{
			gen.EvExited{G: gw(1, 1), Err: errors.New("exit status 1")},
			gen.EvRestartDue{W: 1}, gen.EvSpawned{G: gw(2, 1)},
			gen.EvReload{W: w}, // queued behind the restart
			gen.EvExited{G: gw(2, 1), Err: errors.New("exit status 1")}, // the restart fails: the reload starts
			gen.EvSpawned{G: gw(3, 0)}, gen.EvReady{G: gw(3, 0)}, gen.EvExited{G: gw(1, 0), Err: nil},
			gen.EvSpawned{G: gw(3, 1)}, gen.EvReady{G: gw(3, 1)},
			gen.EvSpawned{G: gw(3, 2)}, gen.EvReady{G: gw(3, 2)},
			gen.EvRestartDue{W: 1}, // too late: worker 1 serves
		}
		var all []string
		for _, ev := range steps {
			all = append(all, names(m.Step(ev))...)
		}
		for i, sl := range m.slots {
			if sl.cur == nil || sl.cur.N != 3 {
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
		m.Step(gen.EvMemSample{RSS: map[*gen.Gen]int64{gw(1, 1): 150 << 20}})
		m.Step(gen.EvSpawned{G: gw(2, 1)})
		m.Step(gen.EvReady{G: gw(2, 1)})
		var all []string
		for range 3 {
			m.Step(gen.EvMemTick{})
			all = append(all, names(m.Step(gen.EvMemSample{RSS: map[*gen.Gen]int64{gw(2, 1): 150 << 20}}))...)
		}
		if n := strings.Count(strings.Join(all, " "), "log:worker.memory_too_low"); n != 1 || slices.ContainsFunc(all, func(a string) bool { return strings.HasPrefix(a, "spawn") }) {
			t.Errorf("%q: want one worker.memory_too_low and no spawn", all)
		}
	})
}

// TestPure: the machine does no I/O — neither it nor what it imports from
// this module imports a package that reaches the system.
func TestPure(t *testing.T) {
	banned := map[string]bool{"os": true, "os/exec": true, "syscall": true, "net": true, "golang.org/x/sys/unix": true}
	const module = "github.com/handoff-dev/handoff/"
	seen := map[string]bool{}
	var visit func(dir, via string)
	visit = func(dir, via string) {
		if seen[dir] {
			return
		}
		seen[dir] = true
		fset := token.NewFileSet()
		pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkgs {
			for name, f := range p.Files {
				for _, imp := range f.Imports {
					path, _ := strconv.Unquote(imp.Path.Value)
					if banned[path] {
						t.Errorf("%s imports %s%s", name, path, via)
					}
					if rest, ok := strings.CutPrefix(path, module); ok {
						visit(filepath.Join("../../..", rest), " (through "+path+")")
					}
				}
			}
		}
	}
	visit(".", "")
}

// TestExitDrainTime: a process that exits without having drained — stopped
// during a reload before it was ready — has no drain time: its
// generation.exited record carries no drain_ms, and the drain histogram
// counts only the generations that drained.
func TestExitDrainTime(t *testing.T) {
	clock := time.Unix(1000, 0)
	m := &Machine{maxDraining: 3, readyTimeout: time.Minute, drainTimeout: 30 * time.Second,
		stopSignal: "SIGTERM", now: func() time.Time { return clock }, nextN: 1}
	g1, g2 := &gen.Gen{N: 1, PID: 101, Started: clock}, &gen.Gen{N: 2, PID: 102, Started: clock}
	m.Step(gen.EvStart{})
	m.Step(gen.EvSpawned{G: g1})
	m.Step(gen.EvReady{G: g1})
	m.Step(gen.EvReload{W: make(chan gen.ReloadResult, 1)})
	m.Step(gen.EvSpawned{G: g2})
	m.Step(gen.EvSignal{Sig: "SIGTERM"})
	clock = clock.Add(2 * time.Second)
	for _, g := range []*gen.Gen{g2, g1} {
		for _, a := range m.Step(gen.EvExited{G: g}) {
			l, ok := a.(gen.ActLog)
			if !ok || l.Event != "generation.exited" {
				continue
			}
			for i := 0; i+1 < len(l.Args); i += 2 {
				if l.Args[i] == "drain_ms" && (g == g2 || l.Args[i+1] != int64(2000)) {
					t.Errorf("generation %d exited with drain_ms=%v; want none for generation 2, 2000 for generation 1", g.N, l.Args[i+1])
				}
			}
		}
	}
}
