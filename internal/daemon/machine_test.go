package daemon

import (
	"errors"
	"fmt"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

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
			out = append(out, fmt.Sprintf("signal %d %s", a.g.n, unixName(a.sig)))
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
			{func() event { return genReady{gen(1)} }, []string{"log:generation.ready", "UpgraderReady", "notify status"}},
		}},
		{"the program fails at start: handoff exits 1", 0, 0, false, false, []step{
			{func() event { return evStart{} }, []string{"spawn 1"}},
			{func() event { return evSpawned{gen(1)} }, []string{"log:generation.started"}},
			{func() event { return genExited{gen(1), errors.New("exit status 2")} }, []string{"release 1", "log:generation.failed", "log:program.failed", "notify stopping", "ReleaseSockets", "done 1"}},
		}},
		{"a reload: the new generation is ready, the old drains", 0, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.extendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return evSignal{syscall.SIGHUP} }, []string{"log:reload.asked", "log:reload.queued"}},
			{func() event { return genReady{gen(2)} }, []string{"log:generation.ready", "signal 1 SIGTERM", "after daemon.killDue", "log:generation.draining", "notify ready", "log:reload.done", "reply1 ok", "log:reload.dequeued", "notify reloading", "notify extend", "spawn 3"}},
			{func() event { return evSpawned{gen(3)} }, []string{"log:generation.started"}},
			{func() event { return genExited{gen(1), nil} }, []string{"release 1", "log:generation.exited"}},
		}},
		{"a broken release fails the reload; the old one serves on", 0, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.extendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return genExited{gen(2), errors.New("exit status 3")} }, []string{"release 2", "log:generation.failed", "notify ready", "reply1 reload failed: generation 2 (pid 102) exited before it was ready (exit status 3)"}},
		}},
		{"not ready in time: killed, then failed", 0, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.extendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return genNotReady{gen(2), errNoReadyNotify} }, []string{"log:generation.not_ready", "signal 2 killed"}},
			{func() event { return genExited{gen(2), errors.New("signal: killed")} }, []string{"release 2", "log:generation.failed", "notify ready", "reply1 reload failed: generation 2 (pid 102) was not ready within 1m0s (--ready-timeout): " + errNoReadyNotify.Error()}},
		}},
		{"bake: the old generation serves until the window ends", time.Second, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGHUP} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.extendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return genReady{gen(2)} }, []string{"log:generation.ready", "log:bake.started", "after daemon.bakeDone", "WatchBake"}},
			{func() event { return extendTick{} }, []string{"notify extend", "after daemon.extendTick"}},
			{func() event { return bakeDone{gen(2)} }, []string{"log:bake.done", "signal 1 SIGTERM", "after daemon.killDue", "log:generation.draining", "notify ready", "log:reload.done"}},
		}},
		{"the serving generation exits: restarted after a backoff", 0, 0, false, true, []step{
			{func() event { return genExited{gen(1), errors.New("exit status 1")} }, []string{"release 1", "log:generation.crashed", "log:restart.scheduled", "after daemon.restartDue"}},
			{func() event { return restartDue{} }, []string{"spawn 2"}},
			{func() event { return evSpawnFailed{errors.New("fork: no memory")} }, []string{"log:restart.failed", "log:restart.scheduled", "after daemon.restartDue"}},
		}},
		{"stop: every generation drains, then handoff exits 0; again kills", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() event { return evReload{w} }, []string{"log:reload.asked", "reply1 handoff is stopping"}},
			{func() event { return doorsClosed{held: 1} }, []string{"log:stop.held_back", "cancel 1", "signal 1 SIGTERM", "after daemon.killDue", "log:generation.draining", "ReleaseSockets"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.kill", "signal 1 killed"}},
			{func() event { return genExited{gen(1), nil} }, []string{"release 1", "log:generation.exited", "done 0"}},
		}},
		{"a stop where handoff cannot read its parent's descriptors leaves the sockets alone, and says so", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() event { return doorsClosed{left: []string{"127.0.0.1:8080"}, parentUnknown: true} }, []string{"log:stop.sockets_unknown",
				"cancel 1", "signal 1 SIGTERM", "after daemon.killDue", "log:generation.draining", "ReleaseSockets"}},
		}},
		{"stop signal again while new connections are held back: killed, then the sockets released", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.asked", "notify stopping", "CloseDoors"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.kill", "signal 1 killed"}},
			{func() event { return doorsClosed{held: 1, queued: 2, left: []string{"systemd:web"}} }, []string{"log:stop.sockets_kept",
				"log:stop.queued_left", "ReleaseSockets"}},
			{func() event { return genExited{gen(1), errors.New("signal: killed")} }, []string{"release 1", "log:generation.exited", "done 0"}},
		}},
		{"stop delay: serve on, refuse reloads, then drain; a second signal skips it", 0, 2 * time.Second, false, true, []step{
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.delayed", "notify stopping", "after daemon.stopDelayOver"}},
			{func() event { return evReload{w} }, []string{"log:reload.asked", "log:reload.refused", "reply1 handoff is stopping"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.delay_skipped", "notify stopping", "CloseDoors"}},
			{func() event { return stopDelayOver{} }, nil},
			{func() event { return doorsClosed{} }, []string{"cancel 1", "signal 1 SIGTERM", "after daemon.killDue", "log:generation.draining", "ReleaseSockets"}},
			{func() event { return evSignal{syscall.SIGTERM} }, []string{"log:stop.kill", "signal 1 killed"}},
		}},
		{"rollback with nothing before the current generation is refused", 0, 0, false, true, []step{
			{func() event { return evRollback{w} }, []string{"log:rollback.asked", "reply1 nothing to roll back to: no generation served before the current one"}},
		}},
		{"rollback during a bake stops the new generation; the old serves on", time.Second, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.extendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return genReady{gen(2)} }, []string{"log:generation.ready", "log:bake.started", "after daemon.bakeDone", "WatchBake"}},
			{func() event { return evRollback{w} }, []string{"log:rollback.asked", "log:rollback.stopping", "signal 2 SIGTERM", "after daemon.killDue", "log:generation.draining", "notify ready", "reply1 reload failed: generation 2 (pid 102) was rolled back during its bake window", "reply1 ok"}},
			{func() event { return bakeDone{gen(2)} }, nil},
		}},
		{"a generation that does not serve is rolled back during its bake; the old serves on", time.Second, 0, false, true, []step{
			{func() event { return evReload{w} }, []string{"log:reload.asked", "notify reloading", "notify extend", "after daemon.extendTick", "spawn 2"}},
			{func() event { return evSpawned{gen(2)} }, []string{"log:generation.started"}},
			{func() event { return genReady{gen(2)} }, []string{"log:generation.ready", "log:bake.started", "after daemon.bakeDone", "WatchBake"}},
			{func() event { return bakeFailed{gen(2), "took no connection"} }, []string{"log:bake.failed", "signal 2 SIGTERM", "after daemon.killDue", "log:generation.draining", "notify ready", "reply1 reload failed: generation 2 (pid 102) failed its bake window: it took no connection"}},
			{func() event { return bakeFailed{gen(2), "answers nothing"} }, nil},
			{func() event { return bakeDone{gen(2)} }, nil},
		}},
		{"SIGUSR2 as PID 1 is refused", 0, 0, true, true, []step{
			{func() event { return evSignal{syscall.SIGUSR2} }, []string{"log:upgrade.refused"}},
		}},
		{"SIGUSR2 upgrades handoff; the new one took over: stop ours", 0, 0, false, true, []step{
			{func() event { return evSignal{syscall.SIGUSR2} }, []string{"log:upgrade.asked", "SelfUpgrade"}},
			{func() event { return evSignal{syscall.SIGUSR2} }, []string{"log:upgrade.ignored"}},
			{func() event { return selfUpgradeDone{nil} }, []string{"SelfUpgradeEnded"}},
			{func() event { return evHandedOver{} }, []string{"log:upgrade.done", "cancel 1", "signal 1 SIGTERM", "after daemon.killDue", "log:generation.draining"}},
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
				m.step(genReady{gen(1)})
				if m.current != gen(1) {
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
					if strings.HasPrefix(a, "signal ") && strings.HasSuffix(a, " killed") {
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
