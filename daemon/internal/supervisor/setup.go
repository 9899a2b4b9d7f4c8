//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/keeper"
	"github.com/handoff-dev/handoff/daemon/internal/logs"
	"github.com/handoff-dev/handoff/daemon/internal/metrics"
	"github.com/handoff-dev/handoff/daemon/internal/quicgroup"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
	"github.com/handoff-dev/handoff/daemon/internal/sockets"
	"github.com/handoff-dev/handoff/daemon/internal/spawn"
	"github.com/handoff-dev/handoff/daemon/internal/watch"
	"github.com/handoff-dev/handoff/internal/holdback"
	"github.com/handoff-dev/handoff/listener"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrader"
	"golang.org/x/sys/unix"
)

// Run runs the program as cfg says until handoff stops, and returns
// handoff's exit status: 0 after a clean stop, ExitStopCut after one that
// had to kill a generation, 1 when the program failed at its start. An error
// means handoff could not start (a socket it cannot bind, a control socket
// in use): nothing was started then. version names this build, for the
// metrics.
func Run(cfg *config.Config, log *slog.Logger, version string) (int, error) {
	s, err := setup(cfg, log, version)
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(s.runDir)
	code := s.run()
	if s.watcher != nil {
		s.watcher.Close()
	}
	s.stopAllStrays()
	s.spawner.FlushOutputs(time.Second)
	s.keeper.Bye()
	// Removes the control socket and the pid file; STOPPING=1 went out when
	// the stop began.
	s.u.Stop()
	if killed := s.m.View().Killed; killed > 0 {
		log.Warn("handoff exits", "event", "handoff.exit", "status", code, "killed", killed)
	} else {
		log.Info("handoff exits", "event", "handoff.exit", "status", code, "killed", 0)
	}
	return code, nil
}

// setup prepares a supervisor: the upgrader (for SIGUSR2), the sockets, the
// control socket and the signals.
func setup(cfg *config.Config, log *slog.Logger, version string) (_ *supervisor, err error) {
	s := &supervisor{cfg: cfg, log: log, version: version, started: time.Now(), procs: map[*gen.Gen]*generation{}, events: make(chan gen.Event, 64), sigC: make(chan os.Signal, 16),
		ctlC: make(chan control.Call), scrapeC: make(chan chan []byte), wdC: make(chan chan error)}
	// The sockets a handoff killed with this control socket left with its
	// keeper, if it still holds them (package keeper).
	taken := keeper.TakeHeld(cfg.HoldPath(), log)
	defer func() { taken.Close() }()
	u, err := upgrader.New(upgrader.Options{PIDFile: cfg.PIDFile, NoSignals: true, Logger: logs.Upgrader(log), FDStore: cfg.FDStore,
		UpgradeTimeout: cfg.ReadyTimeout + 5*time.Second, WatchdogCheck: s.watchdogCheck, Held: taken.Take,
		// A new handoff (SIGUSR2) proves itself by its own generation's
		// readiness (and --bake); handoff serves nothing through a Drainer
		// that the library's bake could pause.
		Bake: -1})
	if errors.Is(err, upgrader.ErrPIDFile) {
		return nil, config.Usagef("handoff run: --pidfile: %v", err)
	}
	if err != nil {
		return nil, err
	}
	s.u = u
	s.reaper = reaper.New(log)
	first := 1
	if n, err := strconv.Atoi(os.Getenv(spawn.EnvNextGen)); err == nil && n > 0 {
		first = n
		os.Unsetenv(spawn.EnvNextGen)
	}
	s.m = newMachine(cfg, first)
	// The shim is the running binary, even if a new one replaced it on disk.
	s.self = "/proc/self/exe"
	// As PID 1, handoff's death ends the container: no keeper is needed.
	if os.Getpid() != 1 {
		var kerr error
		if s.keeper, kerr = keeper.Start(s.self, s.reaper, log, cfg.Hold, cfg.HoldPath(), cfg.LogFormat); kerr != nil {
			log.Warn("no output keeper: if handoff dies, the generations' next writes to their output will fail", "event", "keeper.failed", "err", kerr)
		}
	}
	// A handoff that does not start says goodbye: its keeper must not hold
	// the sockets for a successor.
	defer func() {
		if err != nil {
			s.keeper.Bye()
		}
	}()

	held, err := s.openSockets(u)
	if err != nil {
		return nil, err
	}
	if cfg.Hold > 0 {
		var packet []bool
		for _, ln := range s.sockets {
			_, isPacket := ln.(net.PacketConn)
			packet = append(packet, isPacket)
		}
		s.keeper.HoldSockets(s.names, s.addrs, packet, s.files)
	}
	// Now that this handoff's keeper holds them, the old one may let go.
	taken.Done()
	taken = nil
	if err := checkProbes(cfg, held, s.names); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Control), 0o755); err != nil {
		return nil, fmt.Errorf("handoff: control socket directory: %w", err)
	}
	cln, err := u.Listen("", "unix://"+cfg.Control+"?mode=0600")
	if err != nil {
		return nil, fmt.Errorf("handoff: control socket: %w", err)
	}
	if s.runDir, err = makeRunDir(); err != nil {
		return nil, err
	}
	s.spawner = &spawn.Starter{Config: cfg, Log: log, Self: s.self, RunDir: s.runDir, Files: s.files, Names: s.names, Sockets: s.probeSockets(),
		Watchdog: u.WatchdogInterval(), Reaper: s.reaper, Keeper: s.keeper, QUIC: s.quic, Events: s.events, Strays: s.newStrays}
	signal.Notify(s.sigC, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2)
	// As systemd does for every service (IgnoreSIGPIPE=yes), the generations
	// start with SIGPIPE ignored, inherited from handoff: a write to the
	// pipe of their output after handoff died fails with EPIPE instead of
	// ending them at a random log line. handoff, too, then sees EPIPE when
	// whatever reads its own output goes away.
	signal.Ignore(syscall.SIGPIPE)
	go control.Serve(cln.(*net.UnixListener), s.log, s.ctlC)
	go func() { <-u.Exit(); cln.Close() }()
	if cfg.Metrics != "" {
		if err := s.serveMetrics(); err != nil {
			return nil, err
		}
	}
	if len(cfg.Watch) > 0 {
		// What the paths hold now is what later content is compared
		// with: read before the first generation starts.
		if s.watcher, err = watch.Start(watch.Options{Paths: cfg.Watch, Log: log}); err != nil {
			return nil, fmt.Errorf("handoff run: --watch: %w", err)
		}
	}
	return s, nil
}

// serveMetrics serves --metrics, on a socket opened through the upgrader,
// so that a new handoff (SIGUSR2) serves on the same one.
func (s *supervisor) serveMetrics() error {
	mln, err := s.u.Listen("tcp", s.cfg.Metrics)
	if err != nil {
		// As a --listen socket that cannot be bound: the machine's state,
		// not the command line's fault (exit 1).
		return fmt.Errorf("handoff run: --metrics: %w", err)
	}
	go metrics.Serve(mln, s.scrape, func() {
		// What the scrape allocated goes back to the system, as after a
		// generation's exit: a scrape every few seconds would otherwise
		// hold a few MiB of heap (measured: 13.3 MiB after 200 scrapes,
		// 9.1 without --metrics).
		s.trimMemory()
	})
	go func() { <-s.u.Exit(); mln.Close() }()
	return nil
}

// checkProbes refuses a --ready, --health or --metrics address that one of
// the sockets handoff holds (held, with their names) would answer: every
// generation serves those, so the serving one would answer for the one
// starting. It refuses --ready accept where /proc cannot be read.
func checkProbes(cfg *config.Config, held []net.Addr, names []string) error {
	if cfg.Metrics != "" {
		m := config.Ready{Kind: "tcp", Target: cfg.Metrics}
		if err := m.CheckProbe(held, names); err != nil {
			return config.Usagef("handoff run: --metrics %s is a socket handoff passes to the program; give an address of its own, as in --metrics 127.0.0.1:9101", cfg.Metrics)
		}
	}
	for w := range max(cfg.Workers, 1) {
		if err := cfg.Ready.ForWorker(w).CheckProbe(held, names); err != nil {
			return err
		}
		if err := cfg.Health.ForWorker(w).CheckProbe(held, names); err != nil {
			return config.Usagef("%s", strings.Replace(err.Error(), "--ready", "--health", 1))
		}
	}
	if cfg.Ready.Kind == "accept" {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/fdinfo", os.Getpid())); err != nil {
			return config.Usagef("handoff run: --ready accept: %v — it needs /proc (mount it, or use --ready notify)", err)
		}
	}
	return nil
}

// makeRunDir makes the directory of the generations' notify sockets, in
// $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=) or the temporary
// directory.
func makeRunDir() (string, error) {
	base, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "handoff-")
	if err != nil {
		return "", fmt.Errorf("handoff: run directory: %w", err)
	}
	// Generations running as another user must reach their notify socket.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("handoff: run directory: %w", err)
	}
	return dir, nil
}

// openSockets opens the sockets to pass on through u, so that a new handoff
// inherits them: the --listen addresses, else every socket systemd passed
// (or the old handoff, after SIGUSR2), by name. It returns their local
// addresses.
func (s *supervisor) openSockets(u *upgrader.Upgrader) ([]net.Addr, error) {
	inherited, fromParent := os.LookupEnv(spawn.EnvSystemdNames)
	os.Unsetenv(spawn.EnvSystemdNames)
	listens := s.cfg.Listens
	if len(listens) == 0 {
		var names []string
		if fromParent && u.HasParent() {
			names = strings.Split(inherited, ":")
		} else {
			for _, af := range systemd.Activated() {
				if af.Name != upgrader.FDStoreName {
					// (handoff's own sockets back from the fd store belong
					// to --listen addresses, matched by address.)
					names = append(names, af.Name)
				}
			}
		}
		for _, name := range names {
			a, err := listener.Parse("systemd:" + name)
			if err != nil {
				return nil, fmt.Errorf("handoff: socket name %q from systemd: %w", name, err)
			}
			listens = append(listens, config.Listen{Name: name, Addr: a})
		}
		s.systemdNames = strings.Join(names, ":")
		if len(listens) == 0 {
			return nil, config.Usagef("handoff run: no socket to pass — give --listen [NAME=]ADDR, or start handoff from a .socket unit")
		}
	}
	var held []net.Addr
	for _, l := range listens {
		var f *os.File
		var sock io.Closer
		var err error
		if l.QUIC {
			if s.quic == nil {
				s.quic = quicgroup.New(s.log)
			}
			f, sock, err = s.quic.Open(u, l, len(s.files))
		} else {
			f, sock, err = sockets.Open(u, l.Addr)
		}
		if err != nil {
			return nil, err
		}
		s.sockets = append(s.sockets, sock)
		s.files = append(s.files, f)
		s.names = append(s.names, l.Name)
		s.addrs = append(s.addrs, listenAddr(l))
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return nil, fmt.Errorf("handoff: %s: %w", l.Addr, os.NewSyscallError("fstat", err))
		}
		if ln, ok := sock.(*net.TCPListener); ok {
			if err := holdback.DetachFilter(ln); err != nil {
				s.log.Warn("cannot remove a socket filter a stopping handoff may have left: connections to this socket may be dropped", "event", "start.filter_stays", "addr", l.Addr.String(), "err", err)
			}
		}
		s.inodes = append(s.inodes, st.Ino)
		s.stored = append(s.stored, l.Addr.Network != "systemd" && !l.QUIC && (s.cfg.FDStore || os.Getenv("FDSTORE") != ""))
		held = append(held, sockets.LocalAddr(sock))
	}
	return held, nil
}

// listenAddr returns l's address as status shows it: quic:// for a QUIC
// socket.
func listenAddr(l config.Listen) string {
	if l.QUIC {
		return "quic://" + l.Addr.Address
	}
	return l.Addr.String()
}
