//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/daemon/internal/doors"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/keeper"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
	"github.com/handoff-dev/handoff/daemon/internal/metrics"
	"github.com/handoff-dev/handoff/daemon/internal/probe"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"github.com/handoff-dev/handoff/daemon/internal/quicgroup"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
	"github.com/handoff-dev/handoff/daemon/internal/release"
	"github.com/handoff-dev/handoff/daemon/internal/spawn"
	"github.com/handoff-dev/handoff/daemon/internal/watch"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrader"
)

// supervisor runs the generations: its goroutine (run) turns signals,
// control requests and the generations' events into events of the machine,
// and carries out the machine's actions. Only that goroutine touches the
// machine.
type supervisor struct {
	cfg *config.Config
	log *slog.Logger
	// trimming is set while trimMemory runs.
	trimming atomic.Bool
	u        *upgrader.Upgrader
	reaper   *reaper.Reaper // nil unless handoff is PID 1 or a child subreaper
	keeper   *keeper.Keeper // holds the generations' output pipes for when handoff dies; nil as PID 1
	self     string         // the binary to re-execute as the shim
	runDir   string
	files    []*os.File  // the sockets, as fds 3.. of each generation
	sockets  []io.Closer // the same sockets as listeners, held for the upgrader
	names    []string    // their LISTEN_FDNAMES
	addrs    []string    // their addresses, for status
	inodes   []uint64    // their inodes, for --ready accept
	// stored: the socket is handoff's own (not a .socket unit's) and goes
	// to systemd's fd store.
	stored []bool
	// systemdNames lists, joined by ':', the names of the sockets taken from
	// systemd without --listen, for a new handoff on SIGUSR2.
	systemdNames string

	version string // names this build, for the metrics
	// releaseCache keeps the release files read, so that a worker, a
	// restart or a reload into the same release does not read them again.
	releaseCache release.Cache

	m *machine.Machine
	// procs holds, for each process the machine knows, what the
	// supervisor keeps of it: its command, notify socket, output and
	// timers. Only the supervisor's goroutine uses it. A process is in it
	// from EvSpawned to ActRelease; every lookup allows for a miss, so that
	// an action about a process already released does nothing rather than
	// end handoff, which holds every socket.
	procs   map[*gen.Gen]*generation
	started time.Time
	// serving is what the liveness checks watch (probe.WatchLive): the
	// processes that serve, as of the last step.
	serving atomic.Pointer[[]probe.Proc]
	// relayedAt is when a relay last started or passed a commit on
	// (UnixNano): while that is recent (relayBusy), connections move, and
	// the liveness checks wait (probe.Living.Busy).
	relayedAt atomic.Int64

	// strayStopping holds the pids of the processes left behind that are
	// being stopped (see strays.go).
	strayMu       sync.Mutex
	strayStopping map[int]bool

	events chan gen.Event
	sigC   chan os.Signal
	ctlC   chan control.Call
	// scrapeC carries each --metrics scrape's request for the figures,
	// answered on the channel it carries.
	scrapeC chan chan []byte
	wdC     chan chan error // watchdog checks from the upgrader's ping loop
	// watcher reports the changes of --watch's paths; nil without it.
	watcher *watch.Watcher
	// spawner starts the generations' processes.
	spawner *spawn.Starter
	// quic holds the steering of the --listen quic:// sockets; nil
	// without any.
	quic *quicgroup.Groups
}

// newMachine returns the machine for cfg, numbering generations from first.
func newMachine(cfg *config.Config, first int) *machine.Machine {
	return machine.New(machine.Options{Bake: cfg.Bake, MaxDraining: cfg.MaxDraining, ReadyTimeout: cfg.ReadyTimeout, DrainTimeout: cfg.DrainTimeout,
		StopSignal: config.SignalName(cfg.StopSignal), StopDelay: cfg.StopDelay, Workers: cfg.Workers, MaxSurge: cfg.MaxSurge, MaxMemory: cfg.MaxMemory,
		Handover: cfg.Handover, PID1: os.Getpid() == 1, First: first})
}

// run drives the generations until handoff stops, and returns the exit
// status.
func (s *supervisor) run() int {
	exitC := s.u.Exit()
	if s.cfg.HungAfter > 0 {
		quit := make(chan struct{})
		defer close(quit)
		go probe.WatchLive(quit, probe.Living{After: s.cfg.HungAfter, Health: s.health(), Sockets: s.probeSockets(), Ports: s.tcpPorts(),
			Busy: s.relaying},
			func() []probe.Proc {
				if p := s.serving.Load(); p != nil {
					return *p
				}
				return nil
			}, s.events, s.log)
	}
	if code, done := s.apply(gen.EvStart{}); done {
		return code
	}
	var watchC <-chan watch.Change // nil, never ready, without --watch
	if s.watcher != nil {
		watchC = s.watcher.Changes()
	}
	for {
		var ev gen.Event
		select {
		case sig := <-s.sigC:
			ev = gen.EvSignal{Sig: config.SignalName(sig.(syscall.Signal))}
		case e := <-s.events:
			ev = e
		case c, ok := <-watchC:
			if !ok {
				watchC = nil // the watch ended (it said why)
				continue
			}
			ev = gen.EvWatchChanged{Paths: c.Paths}
		case req := <-s.ctlC:
			switch req.Cmd {
			case "status":
				req.Status <- s.status()
				continue
			case "signal":
				req.Signal <- s.sendSignal(req.Sig)
				continue
			}
			if req.Cmd == "rollback" {
				ev = gen.EvRollback{W: req.Reload}
			} else {
				ev = gen.EvReload{W: req.Reload}
			}
		case reply := <-s.scrapeC:
			reply <- metrics.Render(s.m.View(), s.residentMemory(), s.releases(), s.started, s.version)
			continue
		case reply := <-s.wdC:
			ev = s.checkHung()
			reply <- nil
			if ev == nil {
				continue
			}
		case <-exitC:
			exitC = nil
			if !s.u.HandedOver() {
				continue
			}
			ev = gen.EvHandedOver{}
		}
		if code, done := s.apply(ev); done {
			return code
		}
	}
}

// apply steps the machine with ev and carries out its actions, feeding back
// the result of a spawn; done reports that handoff is to exit with code.
func (s *supervisor) apply(ev gen.Event) (code int, done bool) {
	s.quic.Event(ev)
	if _, ok := ev.(gen.EvExited); ok {
		defer s.trimMemory()
	}
	defer s.publishServing()
	// What an action yields at once (a spawn's result, a measure) is an
	// event of its own, stepped once the actions of the step before are
	// all carried out: the machine is never stepped partway through them.
	var follow []gen.Event
	queue := s.m.Step(ev)
	for len(queue) > 0 || len(follow) > 0 && !done {
		if len(queue) == 0 {
			queue, follow = s.m.Step(follow[0]), follow[1:]
			continue
		}
		a := queue[0]
		queue = queue[1:]
		if d, ok := a.(gen.ActDone); ok {
			code, done = d.Code, true
			continue
		}
		if next := s.carryOut(a); next != nil {
			follow = append(follow, next)
		}
	}
	return code, done
}

// carryOut carries out the action a, but ActDone (apply's), and returns
// the event it yields at once, if any.
func (s *supervisor) carryOut(a gen.Action) gen.Event {
	switch a := a.(type) {
	case gen.ActLog:
		s.log.Log(context.Background(), a.Level, a.Msg, append([]any{"event", a.Event}, a.Args...)...)
	case gen.ActSpawn:
		return s.spawn(a)
	case gen.ActSignal:
		if sig, ok := config.SignalByName(a.Sig); ok {
			s.procs[a.G].signal(sig) // nil once released: nothing to signal
		}
	case gen.ActPause:
		if a.Pause {
			s.procs[a.G].signal(syscall.SIGSTOP)
			if s.procs[a.G] != nil { // released: no process to look at
				go s.logPaused(a.G, s.tcpPorts())
			}
		} else {
			s.procs[a.G].signal(syscall.SIGCONT)
		}
	case gen.ActAfter:
		t := time.AfterFunc(a.D, func() { s.events <- a.Ev })
		if g := s.procs[eventGen(a.Ev)]; g != nil {
			g.timers = append(g.timers, t)
		}
	case gen.ActCancelReady:
		if g := s.procs[a.G]; g != nil {
			g.CancelReady()
		}
	case gen.ActRelease:
		s.release(a.G)
	case gen.ActNotify:
		s.notifyKind(a.Kind, a.Status)
	case gen.ActUpgraderReady:
		if err := s.u.Ready(); err != nil {
			// The generation serves all the same: systemd hears it.
			s.log.Error("ready, with an error", "event", "ready.error", "err", err)
			s.notify(systemd.Ready("serving, but " + err.Error()))
		}
	case gen.ActUpgraderStop:
		s.u.Stop()
	case gen.ActReply:
		for _, w := range a.WS {
			if w != nil {
				w <- a.R
			}
		}
	case gen.ActSelfUpgrade:
		s.upgradeSelf(a.NextN)
	case gen.ActWatchBake:
		s.watchBake(a)
	case gen.ActMeasure:
		return s.measure()
	case gen.ActStopStrays:
		s.stopStrays(a.Strays)
	case gen.ActCloseDoors:
		s.closeDoors()
	case gen.ActReleaseSockets:
		s.keeper.ReleaseSockets()
		s.closeOwnCopies()
		doors.Release(s.inodes, s.log)
	case gen.ActHandOver:
		s.handOver(a)
	case gen.ActSelfUpgradeEnded:
		s.reaper.Resume()
	case gen.ActDone:
		// apply's: it ends the loop.
	}
	return nil
}

// spawn starts process a.W of generation a.N and returns what the machine
// is to hear of it: EvSpawned, or EvSpawnFailed.
func (s *supervisor) spawn(a gen.ActSpawn) gen.Event {
	if s.cfg.EnvFile != "" {
		// Reading the env file may take a few MiB (a long line, refused or
		// not): give them back, off the reload's path.
		defer s.trimMemory()
	}
	p, err := s.spawner.Start(a.N, a.W, a.Spec)
	if err != nil {
		return gen.EvSpawnFailed{Err: err, N: a.N, W: a.W}
	}
	g := &generation{Process: p}
	s.procs[g.Gen] = g
	var prev *generation
	if v := s.m.View(); a.W < len(v.Workers) && v.Workers[a.W].Cur != nil {
		prev = s.procs[v.Workers[a.W].Cur]
	}
	s.identify(g, prev)
	return gen.EvSpawned{G: g.Gen}
}

// release lets go of what g's process held once it has exited: its
// readiness wait, notify socket, the keeper's copies of its output, its
// timers.
func (s *supervisor) release(mg *gen.Gen) {
	g := s.procs[mg]
	if g == nil {
		return // released already
	}
	delete(s.procs, mg)
	g.Release()
	s.keeper.Drop(g.Key())
	for _, t := range g.timers {
		t.Stop()
	}
	g.timers = nil
}

// notifyKind tells systemd what ActNotify says: kind "ready", "reloading",
// "stopping", "extend" (more time for the reload), or a status line.
func (s *supervisor) notifyKind(kind, status string) {
	switch kind {
	case "ready":
		s.notify(systemd.Ready(status))
	case "reloading":
		s.notify(systemd.Reloading(status))
	case "stopping":
		s.notify(systemd.Stopping(status))
	case "extend":
		s.notify(systemd.ExtendTimeout(lifecycle.ExtendBy))
	default:
		s.notify(systemd.Status(status))
	}
}

// upgradeSelf starts a new handoff (SIGUSR2), which numbers its
// generations on from nextN and takes the sockets systemd gave this one by
// the same names; EvSelfUpgradeDone follows.
func (s *supervisor) upgradeSelf(nextN int) {
	os.Setenv(spawn.EnvNextGen, fmt.Sprint(nextN))
	if s.systemdNames != "" {
		os.Setenv(spawn.EnvSystemdNames, s.systemdNames)
	}
	// The new handoff is tableflip's child, waited for by tableflip.
	s.reaper.Pause()
	go func() { s.events <- gen.EvSelfUpgradeDone{Err: s.u.Upgrade()} }()
}

// measure returns the resident memory of the serving processes, for
// --max-memory.
func (s *supervisor) measure() gen.Event {
	return gen.EvMemSample{RSS: s.residentMemory()}
}

// residentMemory returns the resident memory of each serving process that
// could be measured.
func (s *supervisor) residentMemory() map[*gen.Gen]int64 {
	rss := map[*gen.Gen]int64{}
	for _, g := range s.m.View().Gens {
		if g.State == gen.Serving {
			if b, err := procfs.ResidentBytes(g.PID); err == nil {
				rss[g] = b
			}
		}
	}
	return rss
}

// closeDoors holds new connections back for the stop, in a goroutine of
// its own; EvDoorsClosed follows.
func (s *supervisor) closeDoors() {
	socks := make([]doors.Socket, len(s.sockets))
	for i, c := range s.sockets {
		socks[i] = doors.Socket{Listener: c, Inode: s.inodes[i], Addr: s.addrs[i], Stored: i < len(s.stored) && s.stored[i]}
	}
	go func() { s.events <- gen.EvDoorsClosed(doors.Close(socks)) }()
}

// closeOwnCopies closes the descriptors of the sockets that handoff opened
// for itself: those it passes to generations and the listeners it holds.
func (s *supervisor) closeOwnCopies() {
	for _, f := range s.files {
		f.Close()
	}
	for _, c := range s.sockets {
		c.Close()
	}
	s.files, s.sockets = nil, nil
	s.spawner.Files = nil // a process started after this gets no socket
}

// eventGen returns the generation a timed event is about, or nil.
func eventGen(ev any) *gen.Gen {
	switch e := ev.(type) {
	case gen.EvKillDue:
		return e.G
	case gen.EvBakeDone:
		return e.G
	}
	return nil
}

// trimMemory returns the memory a generation's start and drain used to the
// system once the generation is gone, so that handoff stays as small after a
// hundred reloads as after one: Go's heap would otherwise keep a few MiB it
// no longer needs. It costs a garbage collection (about a millisecond),
// off the path of any reload; calls while one runs are dropped.
func (s *supervisor) trimMemory() {
	if !s.trimming.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.trimming.Store(false)
		debug.FreeOSMemory()
	}()
}

// watchdogCheck runs before each of handoff's own watchdog pings: it passes
// only if the supervisor loop answers, and on the way has the loop check the
// serving generation.
func (s *supervisor) watchdogCheck(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.wdC <- reply:
	case <-ctx.Done():
		return fmt.Errorf("handoff's supervisor loop does not answer: %w", ctx.Err())
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("handoff's supervisor loop does not answer: %w", ctx.Err())
	}
}

// checkHung returns an EvHung for the serving generation if it uses the
// watchdog (it has sent WATCHDOG=1) and has not pinged for the whole
// interval — it is then killed and restarted like a generation that crashed
// — or nil.
func (s *supervisor) checkHung() gen.Event {
	wd := s.u.WatchdogInterval()
	if wd <= 0 {
		return nil
	}
	for _, sl := range s.m.View().Workers {
		g := sl.Cur
		if g == nil || g.Hung {
			continue
		}
		p := s.procs[g]
		if p == nil {
			continue
		}
		last := p.LastPing()
		if last.IsZero() {
			continue
		}
		if quiet := time.Since(last); quiet > wd {
			return gen.EvHung{G: g, Quiet: quiet}
		}
	}
	return nil
}

func (s *supervisor) notify(_ bool, err error) {
	if err != nil {
		s.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
	}
}

// watchBake runs the bake window's checks of a.G, in a goroutine of its
// own, and sends EvBakeFailed at the first that fails — unless the window
// has ended meanwhile: too late to roll back.
func (s *supervisor) watchBake(a gen.ActWatchBake) {
	g := s.procs[a.G]
	if g == nil {
		return // exited meanwhile: nothing bakes
	}
	health := s.health()
	if health.Kind != "" {
		health = health.ForWorker(a.G.W)
	}
	b := probe.Baking{New: a.G, Old: a.Old, Others: a.Others, Exited: g.Exited(), Health: health, Sockets: s.probeSockets(), Ports: s.tcpPorts()}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Bake)
		defer cancel()
		if reason := probe.Bake(ctx, b, s.log); reason != "" {
			select {
			case <-ctx.Done():
			case s.events <- gen.EvBakeFailed{G: a.G, Reason: reason}:
			}
		}
	}()
}

// publishServing gives the liveness checks the processes that serve now.
// Called by the supervisor's goroutine after each step.
func (s *supervisor) publishServing() {
	if s.cfg.HungAfter <= 0 {
		return
	}
	var out []probe.Proc
	for _, sl := range s.m.View().Workers {
		if g := sl.Cur; g != nil && g.State == gen.Serving && !g.Unresponsive {
			if p := s.procs[g]; p != nil {
				out = append(out, probe.Proc{G: g, Exited: p.Exited()})
			}
		}
	}
	s.serving.Store(&out)
}

// health returns the health check: --health, else the --ready probe if it
// is http or tcp; its Kind is "" for none.
func (s *supervisor) health() config.Ready {
	if s.cfg.Health.Kind == "" && (s.cfg.Ready.Kind == "http" || s.cfg.Ready.Kind == "tcp") {
		return s.cfg.Ready
	}
	return s.cfg.Health
}

// probeSockets returns the listening sockets as the probes see them.
func (s *supervisor) probeSockets() []probe.Socket {
	out := make([]probe.Socket, len(s.inodes))
	for i, ino := range s.inodes {
		out[i] = probe.Socket{Inode: ino, Name: s.names[i], Addr: s.addrs[i]}
	}
	return out
}

// logPaused logs, once g's process has stopped (SIGSTOP), how many
// connections it holds: they end with it, since it accepts no more.
// (The checks counted them before the signal; more may have come since.)
func (s *supervisor) logPaused(g *gen.Gen, ports map[uint16]bool) {
	for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		if st, _, _, ok := procfs.Stat(g.PID); !ok || st == "T" || time.Now().After(deadline) {
			break
		}
	}
	if len(ports) == 0 {
		return
	}
	about := []any{"gen", g.N, "gen_pid", g.PID}
	if s.cfg.Workers > 1 {
		about = []any{"gen", g.N, "worker", g.W, "gen_pid", g.PID}
	}
	s.log.Warn("process paused: the connections it holds end with it", append([]any{"event", "worker.paused"},
		append(about, "conns", probe.Held(g.PID, ports))...)...)
}

// tcpPorts returns the local ports of the TCP sockets handoff holds.
func (s *supervisor) tcpPorts() map[uint16]bool {
	ports := map[uint16]bool{}
	for _, c := range s.sockets {
		if ln, ok := c.(net.Listener); ok {
			if a, ok := ln.Addr().(*net.TCPAddr); ok {
				ports[uint16(a.Port)] = true
			}
		}
	}
	return ports
}
