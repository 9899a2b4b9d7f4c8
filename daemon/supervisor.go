//go:build linux

package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/doors"
	"github.com/handoff-dev/handoff/daemon/internal/keeper"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrader"
)

// Restart backoff for a generation that exits on its own: doubled on each
// failure in a row, from restartMin up to restartMax; a generation that served
// for stableAfter resets it.
const (
	restartMin  = 100 * time.Millisecond
	restartMax  = 10 * time.Second
	stableAfter = 10 * time.Second
)

// ReloadResult is the outcome of one reload, as `handoff reload` reports it.
type ReloadResult struct {
	OK         bool   `json:"ok"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Millis     int64  `json:"ms,omitempty"`
	PIDs       []int  `json:"pids,omitempty"` // every worker's, with --workers above 1
	Error      string `json:"error,omitempty"`
}

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
	// firstInWd records, without --chdir, whether the first generation's
	// program lay in handoff's working directory (see checkWorkDir).
	firstInWd *bool

	m       *machine
	started time.Time
	// serving is what the liveness checks watch (liveness.go): the
	// processes that serve, as of the last step.
	serving atomic.Pointer[[]*generation]

	// strayStopping holds the pids of the processes left behind that are
	// being stopped (see strays.go).
	strayMu       sync.Mutex
	strayStopping map[int]bool

	events chan event
	sigC   chan os.Signal
	ctlC   chan ctlRequest
	wdC    chan chan error // watchdog checks from the upgrader's ping loop
}

// newMachine returns the machine for cfg, numbering generations from first.
func newMachine(cfg *config.Config, first int) *machine {
	return &machine{bake: cfg.Bake, maxDraining: cfg.MaxDraining, readyTimeout: cfg.ReadyTimeout, workers: cfg.Workers, surge: cfg.MaxSurge, maxMemory: cfg.MaxMemory,
		drainTimeout: cfg.DrainTimeout, stopSignal: cfg.StopSignal, pid1: os.Getpid() == 1, stops: lifecycle.Stops{Delay: cfg.StopDelay}, now: time.Now, nextN: first}
}

// run drives the generations until handoff stops, and returns the exit
// status.
func (s *supervisor) run() int {
	exitC := s.u.Exit()
	if s.cfg.HungAfter > 0 {
		quit := make(chan struct{})
		defer close(quit)
		go s.watchLive(quit)
	}
	if code, done := s.apply(evStart{}); done {
		return code
	}
	for {
		var ev event
		select {
		case sig := <-s.sigC:
			ev = evSignal{sig.(syscall.Signal)}
		case e := <-s.events:
			ev = e
		case req := <-s.ctlC:
			switch req.cmd {
			case "status":
				req.status <- s.status()
				continue
			case "signal":
				req.signal <- s.sendSignal(req.sig)
				continue
			case "metrics":
				req.metrics <- s.metrics()
				continue
			}
			if req.cmd == "rollback" {
				ev = evRollback{req.reload}
			} else {
				ev = evReload{req.reload}
			}
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
			ev = evHandedOver{}
		}
		if code, done := s.apply(ev); done {
			return code
		}
	}
}

// apply steps the machine with ev and carries out its actions, feeding back
// the result of a spawn; done reports that handoff is to exit with code.
func (s *supervisor) apply(ev event) (code int, done bool) {
	if _, ok := ev.(evExited); ok {
		defer s.trimMemory()
	}
	defer s.publishServing()
	// What an action yields at once (a spawn's result, a measure) is an
	// event of its own, stepped once the actions of the step before are
	// all carried out: the machine is never stepped partway through them.
	var follow []event
	queue := s.m.step(ev)
	for len(queue) > 0 || len(follow) > 0 && !done {
		if len(queue) == 0 {
			queue, follow = s.m.step(follow[0]), follow[1:]
			continue
		}
		a := queue[0]
		queue = queue[1:]
		switch a := a.(type) {
		case actLog:
			s.log.Log(context.Background(), a.level, a.msg, append([]any{"event", a.event}, a.args...)...)
		case actSpawn:
			var next event
			if g, err := s.start(a.n, a.w, a.spec); err != nil {
				next = evSpawnFailed{err, a.n, a.w}
			} else {
				next = evSpawned{g}
			}
			if s.cfg.EnvFile != "" {
				// Reading the env file may have taken a few MiB (a long
				// line, refused or not): give them back, off the reload's
				// path.
				s.trimMemory()
			}
			follow = append(follow, next)
		case actSignal:
			a.g.signal(a.sig)
		case actPause:
			if a.pause {
				a.g.signal(syscall.SIGSTOP)
			} else {
				a.g.signal(syscall.SIGCONT)
			}
		case actAfter:
			t := time.AfterFunc(a.d, func() { s.events <- a.ev })
			if g := eventGen(a.ev); g != nil {
				g.timers = append(g.timers, t)
			}
		case actCancelReady:
			a.g.cancel()
		case actRelease:
			a.g.cancel()
			a.g.closeNotify()
			s.keeper.Drop(a.g.key())
			for _, t := range a.g.timers {
				t.Stop()
			}
			a.g.timers = nil
		case actNotify:
			switch a.kind {
			case "ready":
				s.notify(systemd.Ready(a.status))
			case "reloading":
				s.notify(systemd.Reloading(a.status))
			case "stopping":
				s.notify(systemd.Stopping(a.status))
			case "extend":
				s.notify(systemd.ExtendTimeout(lifecycle.ExtendBy))
			default:
				s.notify(systemd.Status(a.status))
			}
		case actUpgraderReady:
			if err := s.u.Ready(); err != nil {
				// The generation serves all the same: systemd hears it.
				s.log.Error("ready, with an error", "event", "ready.error", "err", err)
				s.notify(systemd.Ready("serving, but " + err.Error()))
			}
		case actUpgraderStop:
			s.u.Stop()
		case actReply:
			for _, w := range a.ws {
				if w != nil {
					w <- a.r
				}
			}
		case actSelfUpgrade:
			// The new handoff numbers its generations on from ours, and
			// takes the sockets systemd gave us by the same names.
			os.Setenv(envNextGen, fmt.Sprint(a.nextN))
			if s.systemdNames != "" {
				os.Setenv(envSystemdNames, s.systemdNames)
			}
			// The new handoff is tableflip's child, waited for by tableflip.
			s.reaper.Pause()
			go func() { s.events <- evSelfUpgradeDone{s.u.Upgrade()} }()
		case actWatchBake:
			go s.watchBake(a.g, a.old, a.others, s.tcpPorts())
		case actMeasure:
			rss := map[*generation]int64{}
			for _, g := range s.m.gens {
				if g.state == serving {
					if b, err := procfs.ResidentBytes(g.pid); err == nil {
						rss[g] = b
					}
				}
			}
			follow = append(follow, evMemSample{rss})
		case actStopStrays:
			s.stopStrays(a.strays)
		case actCloseDoors:
			socks := make([]doors.Socket, len(s.sockets))
			for i, c := range s.sockets {
				socks[i] = doors.Socket{Listener: c, Inode: s.inodes[i], Addr: s.addrs[i], Stored: i < len(s.stored) && s.stored[i]}
			}
			go func() { s.events <- evDoorsClosed{doors.Close(socks)} }()
		case actReleaseSockets:
			s.keeper.ReleaseSockets()
			s.closeOwnCopies()
			doors.Release(s.inodes, s.log)
		case actSelfUpgradeEnded:
			s.reaper.Resume()
		case actDone:
			code, done = a.code, true
		}
	}
	return code, done
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
}

// eventGen returns the generation a timed event is about, or nil.
func eventGen(ev any) *generation {
	switch e := ev.(type) {
	case evKillDue:
		return e.g
	case evBakeDone:
		return e.g
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

// checkHung returns an evHung for the serving generation if it uses the
// watchdog (it has sent WATCHDOG=1) and has not pinged for the whole
// interval — it is then killed and restarted like a generation that crashed
// — or nil.
func (s *supervisor) checkHung() event {
	wd := s.u.WatchdogInterval()
	if wd <= 0 {
		return nil
	}
	for _, sl := range s.m.slots {
		g := sl.cur
		if g == nil || g.hung {
			continue
		}
		last := g.lastPing.Load()
		if last == 0 {
			continue
		}
		if quiet := time.Since(time.Unix(0, last)); quiet > wd {
			return evHung{g, quiet}
		}
	}
	return nil
}

func (s *supervisor) notify(_ bool, err error) {
	if err != nil {
		s.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
	}
}
