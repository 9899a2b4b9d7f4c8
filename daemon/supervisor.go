package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

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

// supervisor events besides the generations' own.
type (
	bakeDone        struct{ g *generation }
	killDue         struct{ g *generation }
	restartDue      struct{}
	selfUpgradeDone struct{ err error }
)

// ReloadResult is the outcome of one reload, as `handoff reload` reports it.
type ReloadResult struct {
	OK         bool   `json:"ok"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Millis     int64  `json:"ms,omitempty"`
	Error      string `json:"error,omitempty"`
}

// supervisor owns the generations. Only its run goroutine touches its fields.
type supervisor struct {
	cfg     *config
	log     *slog.Logger
	u       *upgrader.Upgrader
	reaper  *reaper // nil unless handoff is PID 1 or a child subreaper
	self    string  // the binary to re-execute as the shim
	runDir  string
	files   []*os.File  // the sockets, as fds 3.. of each generation
	sockets []io.Closer // the same sockets as listeners, held for the upgrader
	names   []string    // their LISTEN_FDNAMES
	addrs   []string    // their addresses, for status
	inodes  []uint64    // their inodes, for --ready accept
	// systemdNames lists, joined by ':', the names of the sockets taken from
	// systemd without --listen, for a new handoff on SIGUSR2.
	systemdNames string

	events chan any
	sigC   chan os.Signal
	ctlC   chan ctlRequest
	wdC    chan chan error // watchdog checks from the upgrader's ping loop

	gens       []*generation // not exited, oldest first
	current    *generation   // serving
	next       *generation   // starting or baking
	nextN      int
	firstReady bool

	reloading     bool
	reloadStart   time.Time
	waiters       []chan<- ReloadResult
	queued        bool
	queuedWaiters []chan<- ReloadResult

	restarts    int
	backoff     time.Duration
	stopping    bool
	stopSignals int
	exitCode    int
	selfUpgrade bool
}

// run drives the generations until handoff stops, and returns the exit
// status.
func (s *supervisor) run() int {
	if err := s.spawn(false); err != nil {
		s.log.Error("cannot start the program", "err", err)
		return 1
	}
	exitC := s.u.Exit()
	for {
		select {
		case sig := <-s.sigC:
			s.onSignal(sig.(syscall.Signal))
		case ev := <-s.events:
			s.onEvent(ev)
		case req := <-s.ctlC:
			s.onControl(req)
		case reply := <-s.wdC:
			s.checkHung()
			reply <- nil
		case <-exitC:
			exitC = nil
			if s.u.HandedOver() {
				s.log.Info("handed over to the new handoff; stopping this one's generations")
				s.stop(false)
			}
		}
		if s.stopping && len(s.gens) == 0 {
			return s.exitCode
		}
	}
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

// checkHung kills the serving generation if it uses the watchdog
// (it has sent WATCHDOG=1) and has not pinged for the whole interval; it is
// then restarted like a generation that crashed.
func (s *supervisor) checkHung() {
	g := s.current
	wd := s.u.WatchdogInterval()
	if g == nil || g.hung || wd <= 0 {
		return
	}
	last := g.lastPing.Load()
	if last == 0 {
		return
	}
	if quiet := time.Since(time.Unix(0, last)); quiet > wd {
		g.hung = true
		s.log.Error("generation hung: no WATCHDOG=1 within WatchdogSec; killing it", "gen", g.n, "gen_pid", g.pid, "quiet", quiet.Round(time.Millisecond).String())
		g.signal(syscall.SIGABRT)
		g.killT = time.AfterFunc(time.Second, func() { s.events <- killDue{g} })
	}
}

func (s *supervisor) onSignal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGHUP:
		s.log.Info("reload asked", "signal", "SIGHUP")
		s.askReload(nil)
	case syscall.SIGUSR2:
		s.upgradeSelf()
	case syscall.SIGTERM, syscall.SIGINT:
		s.stopSignals++
		if s.stopSignals > 1 {
			s.log.Warn("stop signal again: killing every generation", "signal", unixName(sig))
			for _, g := range s.gens {
				g.signal(syscall.SIGKILL)
			}
			return
		}
		s.log.Info("stop asked", "signal", unixName(sig))
		s.stop(true)
	}
}

func (s *supervisor) onEvent(ev any) {
	switch e := ev.(type) {
	case genReady:
		s.onReady(e.g)
	case genNotReady:
		if e.g == s.next && e.g.state == starting {
			e.g.failWhy = fmt.Sprintf("was not ready within %v (--ready-timeout)", s.cfg.ReadyTimeout)
			var na *notAccepting
			if errors.As(e.err, &na) || errors.Is(e.err, errNoReadyNotify) {
				e.g.failWhy += ": " + e.err.Error()
			}
			s.log.Warn("generation not ready in time; killing it", "gen", e.g.n, "gen_pid", e.g.pid)
			e.g.signal(syscall.SIGKILL)
		}
	case genExited:
		s.onExit(e.g, e.err)
	case bakeDone:
		if e.g == s.next && e.g.state == baking {
			s.log.Info("bake window over", "gen", e.g.n, "gen_pid", e.g.pid)
			s.promote(e.g)
		}
	case killDue:
		if e.g.state != exited {
			s.log.Warn("generation did not exit within the drain timeout; killing it", "gen", e.g.n, "gen_pid", e.g.pid, "drain_timeout", s.cfg.DrainTimeout.String())
			e.g.signal(syscall.SIGKILL)
		}
	case restartDue:
		if !s.stopping && s.current == nil && s.next == nil {
			s.restarts++
			if err := s.spawn(true); err != nil {
				s.log.Error("cannot restart the program", "err", err)
				s.scheduleRestart()
			}
		}
	case selfUpgradeDone:
		s.selfUpgrade = false
		s.reaper.resume()
		if e.err != nil {
			s.log.Error("handoff upgrade failed; this handoff keeps running", "err", e.err)
		}
	}
}

// spawn starts the next generation as s.next.
func (s *supervisor) spawn(restart bool) error {
	n := s.nextN
	g, err := s.start(n)
	if err != nil {
		return err
	}
	s.nextN++
	g.restart = restart
	s.gens = append(s.gens, g)
	s.next = g
	s.log.Info("generation started", "gen", n, "gen_pid", g.pid, "restart", restart)
	return nil
}

func (s *supervisor) onReady(g *generation) {
	if g != s.next || g.state != starting {
		return
	}
	g.readyAt = time.Now()
	s.log.Info("generation ready", "gen", g.n, "gen_pid", g.pid, "ready_ms", g.readyAt.Sub(g.started).Milliseconds())
	if s.cfg.Bake > 0 && s.current != nil {
		g.state = baking
		s.log.Info("baking: the old generation serves on", "gen", g.n, "gen_pid", g.pid, "bake", s.cfg.Bake.String())
		time.AfterFunc(s.cfg.Bake, func() { s.events <- bakeDone{g} })
		return
	}
	s.promote(g)
}

// promote makes g the serving generation and drains the one before it.
func (s *supervisor) promote(g *generation) {
	old := s.current
	g.state, s.current, s.next = serving, g, nil
	if old != nil {
		s.drain(old)
	}
	status := fmt.Sprintf("serving generation %d (pid %d)", g.n, g.pid)
	if !s.firstReady {
		s.firstReady = true
		if err := s.u.Ready(); err != nil {
			s.log.Error("ready", "err", err)
		}
		s.notifyStatus(status)
	} else if s.reloading {
		s.notify(systemd.Ready(status))
	} else {
		s.notifyStatus(status)
	}
	if s.reloading {
		took := time.Since(s.reloadStart)
		s.log.Info("reload done", "gen", g.n, "gen_pid", g.pid, "reload_ms", took.Milliseconds())
		s.finishReload(ReloadResult{OK: true, Generation: g.n, PID: g.pid, Millis: took.Milliseconds()})
	}
	s.afterNext()
}

// drain asks g to stop, and kills it after the drain timeout; past
// --max-draining, the oldest draining generation is killed at once.
func (s *supervisor) drain(g *generation) {
	g.state = draining
	g.exitedAt = time.Now() // when the drain began, until it exits
	g.signal(s.cfg.StopSignal)
	g.killT = time.AfterFunc(s.cfg.DrainTimeout, func() { s.events <- killDue{g} })
	s.log.Info("draining", "gen", g.n, "gen_pid", g.pid, "signal", unixName(s.cfg.StopSignal))
	var drainingGens []*generation
	for _, d := range s.gens {
		if d.state == draining {
			drainingGens = append(drainingGens, d)
		}
	}
	for i := 0; len(drainingGens)-i > s.cfg.MaxDraining; i++ {
		d := drainingGens[i]
		s.log.Warn("too many generations draining (--max-draining); killing the oldest", "gen", d.n, "gen_pid", d.pid, "max", s.cfg.MaxDraining)
		d.signal(syscall.SIGKILL)
	}
}

func (s *supervisor) onExit(g *generation, err error) {
	prev := g.state
	g.state = exited
	g.cancel()
	g.closeNotify()
	if g.killT != nil {
		g.killT.Stop()
	}
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	how := describeExit(err)
	switch {
	case g == s.next:
		s.next = nil
		why := g.failWhy
		if why == "" && prev == baking {
			why = "died during the bake window (" + how + ")"
		} else if why == "" {
			why = "exited before it was ready (" + how + ")"
		}
		reason := fmt.Sprintf("generation %d (pid %d) %s", g.n, g.pid, why)
		if lines := g.lastLines(); len(lines) > 0 {
			reason += "; it printed last: " + strings.Join(lines, " | ")
		}
		s.log.Error("new generation failed", "gen", g.n, "gen_pid", g.pid, "reason", reason)
		switch {
		case s.stopping:
		case !s.firstReady && !g.restart:
			s.log.Error("the program failed at start; handoff exits", "reason", reason)
			s.exitCode = 1
			s.stop(true)
		case s.reloading:
			s.notify(systemd.Ready(fmt.Sprintf("reload failed: %s; serving generation %d", reason, s.currentN())))
			s.finishReload(ReloadResult{Error: "reload failed: " + reason})
		}
		if s.current == nil && !s.stopping {
			s.scheduleRestart()
		}
		s.afterNext()
	case g == s.current:
		s.current = nil
		if s.stopping {
			s.log.Info("generation exited", "gen", g.n, "gen_pid", g.pid, "status", how)
			return
		}
		if time.Since(g.readyAt) >= stableAfter {
			s.backoff = 0
		}
		s.log.Warn("generation exited on its own; restarting it", "gen", g.n, "gen_pid", g.pid, "status", how, "last_output", strings.Join(g.lastLines(), " | "))
		if s.next == nil {
			s.scheduleRestart()
		}
	default:
		s.log.Info("generation exited", "gen", g.n, "gen_pid", g.pid, "status", how, "drain_ms", time.Since(g.exitedAt).Milliseconds())
	}
}

func (s *supervisor) currentN() int {
	if s.current == nil {
		return 0
	}
	return s.current.n
}

func (s *supervisor) scheduleRestart() {
	switch {
	case s.backoff == 0:
		s.backoff = restartMin
	case s.backoff < restartMax:
		s.backoff = min(2*s.backoff, restartMax)
	}
	s.log.Info("restart scheduled; the sockets stay open meanwhile", "in", s.backoff.String())
	time.AfterFunc(s.backoff, func() { s.events <- restartDue{} })
}

// askReload starts a reload, or queues one if a generation is already on its
// way. w, if not nil, receives the result.
func (s *supervisor) askReload(w chan<- ReloadResult) {
	if s.stopping {
		if w != nil {
			w <- ReloadResult{Error: "handoff is stopping"}
		}
		return
	}
	if s.next != nil {
		if !s.queued {
			s.log.Info("reload queued: a new generation is already starting", "gen", s.next.n)
		}
		s.queued = true
		if w != nil {
			s.queuedWaiters = append(s.queuedWaiters, w)
		}
		return
	}
	if w != nil {
		s.waiters = append(s.waiters, w)
	}
	s.startReload()
}

func (s *supervisor) startReload() {
	s.reloading = true
	s.reloadStart = time.Now()
	s.notify(systemd.Reloading(fmt.Sprintf("reloading: starting generation %d", s.nextN)))
	if err := s.spawn(false); err != nil {
		s.log.Error("reload failed", "err", err)
		s.notify(systemd.Ready("reload failed: " + err.Error()))
		s.finishReload(ReloadResult{Error: "reload failed: " + err.Error()})
		s.afterNext()
	}
}

func (s *supervisor) finishReload(r ReloadResult) {
	for _, w := range s.waiters {
		w <- r
	}
	s.waiters, s.reloading = nil, false
}

// afterNext starts the queued reload, if any, once no generation is on its
// way.
func (s *supervisor) afterNext() {
	if s.next != nil || !s.queued || s.stopping {
		return
	}
	s.queued = false
	s.waiters, s.queuedWaiters = s.queuedWaiters, nil
	s.log.Info("starting the queued reload")
	s.startReload()
}

// stop asks every generation to stop; handoff exits once they have.
// real is false after handing over to a new handoff.
func (s *supervisor) stop(real bool) {
	if s.stopping {
		return
	}
	s.stopping = true
	fail := ReloadResult{Error: "handoff is stopping"}
	s.finishReload(fail)
	for _, w := range s.queuedWaiters {
		w <- fail
	}
	s.queued, s.queuedWaiters = false, nil
	if real {
		s.notify(systemd.Stopping("stopping every generation"))
		if s.selfUpgrade {
			// A new handoff is starting: have the upgrader kill it, or
			// it would take over after this one stopped.
			s.u.Stop()
		}
	}
	s.next = nil
	for _, g := range s.gens {
		if g.state != draining {
			g.cancel()
			s.drain(g)
		}
	}
}

func (s *supervisor) upgradeSelf() {
	if s.selfUpgrade || s.stopping {
		s.log.Info("SIGUSR2 ignored: an upgrade of handoff or a stop is under way")
		return
	}
	if os.Getpid() == 1 {
		// The old handoff exits once the new one serves, and PID 1's exit
		// ends the container.
		s.log.Warn("SIGUSR2 refused: handoff is PID 1, and its exit after the upgrade would end the container; " +
			"restart the container with the new handoff, or SIGHUP to reload the program")
		return
	}
	s.log.Info("handoff upgrade asked", "signal", "SIGUSR2")
	s.selfUpgrade = true
	// The new handoff numbers its generations on from ours, and takes the
	// sockets systemd gave us by the same names.
	os.Setenv(envNextGen, fmt.Sprint(s.nextN))
	if s.systemdNames != "" {
		os.Setenv(envSystemdNames, s.systemdNames)
	}
	// The new handoff is tableflip's child, waited for by tableflip.
	s.reaper.pause()
	go func() { s.events <- selfUpgradeDone{s.u.Upgrade()} }()
}

func (s *supervisor) notifyStatus(status string) {
	s.notify(systemd.Status(status))
}

func (s *supervisor) notify(_ bool, err error) {
	if err != nil {
		s.log.Warn("sd_notify failed", "err", err)
	}
}

func unixName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return "SIG" + name
		}
	}
	return sig.String()
}
