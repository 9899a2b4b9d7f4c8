//go:build linux

package daemon

import (
	"encoding/json"
	"errors"
	"flag"
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
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/daemon/internal/doors"
	"github.com/handoff-dev/handoff/daemon/internal/keeper"
	"github.com/handoff-dev/handoff/daemon/internal/launch"
	"github.com/handoff-dev/handoff/daemon/internal/logs"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
	"github.com/handoff-dev/handoff/listener"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrader"
)

// ExitStopCut is handoff run's exit status after a stop that had to kill a
// generation — a second stop signal, or one still draining at
// --drain-timeout — where a clean stop exits 0.
const ExitStopCut = machine.ExitStopCut

// Version is handoff's version; release builds set it with
// -ldflags "-X github.com/handoff-dev/handoff/daemon.Version=v1.2.3".
var Version = ""

// envNextGen carries the next generation number to a new handoff on SIGUSR2.
const envNextGen = "HANDOFF_NEXT_GEN"

// envSystemdNames carries to a new handoff on SIGUSR2 the names of the
// sockets systemd passed without --listen, in order, joined by ':' as in
// LISTEN_FDNAMES: the new handoff gets the sockets from its predecessor, not
// from systemd, so it cannot learn them otherwise.
const envSystemdNames = "HANDOFF_SYSTEMD_NAMES"

const mainUsage = `handoff — zero-downtime restarts for any program that accepts systemd sockets

Usage:
  handoff run [flags] -- PROGRAM [ARGS...]       hold the sockets and run PROGRAM as generations
  handoff reload [--control PATH] [--timeout D]  start a new generation; exit 0 once it is ready
  handoff status [--control PATH] [--json]       show the generations and sockets
  handoff rollback [--control PATH]              back to what the previous generation ran (or stop one that bakes)
  handoff signal [--control PATH] SIG            send SIG (USR1, SIGUSR1, 10) to the serving generation
  handoff version                                print the version

Signals to 'handoff run':
  SIGHUP           reload: new generation, then drain the old one
  SIGTERM, SIGINT  stop every generation gracefully, then exit 0 (twice: kill them)
  SIGUSR2          upgrade handoff itself, keeping the sockets

Example:
  handoff run --listen web=127.0.0.1:8080 -- /usr/local/bin/app
  handoff reload

Run 'handoff COMMAND --help' for a command's flags.
`

// Main runs the handoff command with args (without the program name) and
// returns its exit status: 0 on success, 1 on a failure, 2 on a usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return 2
	}
	switch args[0] {
	case launch.ShimCommand:
		return launch.Shim(args[1:], stderr)
	case keeper.Command:
		return keeper.Main(args[1:], stderr)
	case "run":
		return cmdRun(args[1:], stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr, "reload")
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "signal":
		return cmdSignal(args[1:], stdout, stderr)
	case "rollback":
		return cmdReload(args[1:], stdout, stderr, "rollback")
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "handoff", version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage)
		return 0
	}
	fmt.Fprintf(stderr, "handoff: unknown command %q — run 'handoff --help' for the commands\n", args[0])
	return 2
}

func exitFor(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, err)
	if errors.Is(err, config.ErrUsage) {
		return 2
	}
	return 1
}

func cmdRun(args []string, stderr io.Writer) int {
	cfg, err := config.Parse(args, stderr)
	if err != nil {
		return exitFor(err, stderr)
	}
	log := slog.New(logs.Handler(cfg.LogFormat, stderr)).With("handoff_pid", os.Getpid())
	s, err := setup(cfg, log)
	if err != nil {
		return exitFor(err, stderr)
	}
	defer os.RemoveAll(s.runDir)
	code := s.run()
	s.stopAllStrays()
	s.keeper.Bye()
	// Removes the control socket and the pid file; STOPPING=1 went out when
	// the stop began.
	s.u.Stop()
	if killed := s.m.View().Killed; killed > 0 {
		log.Warn("handoff exits", "event", "handoff.exit", "status", code, "killed", killed)
	} else {
		log.Info("handoff exits", "event", "handoff.exit", "status", code, "killed", 0)
	}
	return code
}

// setup prepares a supervisor: the upgrader (for SIGUSR2), the sockets, the
// control socket and the signals.
func setup(cfg *config.Config, log *slog.Logger) (_ *supervisor, err error) {
	s := &supervisor{cfg: cfg, log: log, started: time.Now(), procs: map[*machine.Gen]*generation{}, events: make(chan machine.Event, 64), sigC: make(chan os.Signal, 16),
		ctlC: make(chan control.Call), wdC: make(chan chan error)}
	// The sockets a handoff killed with this control socket left with its
	// keeper, if it still holds them (keeper.go).
	taken := keeper.TakeHeld(cfg.Control, log)
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
	if n, err := strconv.Atoi(os.Getenv(envNextGen)); err == nil && n > 0 {
		first = n
		os.Unsetenv(envNextGen)
	}
	s.m = newMachine(cfg, first)
	// The shim is the running binary, even if a new one replaced it on disk.
	s.self = "/proc/self/exe"
	// As PID 1, handoff's death ends the container: no keeper is needed.
	if os.Getpid() != 1 {
		var kerr error
		if s.keeper, kerr = keeper.Start(s.self, s.reaper, log, cfg.Hold, cfg.Control, cfg.LogFormat); kerr != nil {
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
	if cfg.Metrics != "" {
		m := config.Ready{Kind: "tcp", Target: cfg.Metrics}
		if err := m.CheckProbe(held, s.names); err != nil {
			return nil, config.Usagef("handoff run: --metrics %s is a socket handoff passes to the program; give an address of its own, as in --metrics 127.0.0.1:9101", cfg.Metrics)
		}
	}
	for w := range max(cfg.Workers, 1) {
		if err := cfg.Ready.ForWorker(w).CheckProbe(held, s.names); err != nil {
			return nil, err
		}
		if err := cfg.Health.ForWorker(w).CheckProbe(held, s.names); err != nil {
			return nil, config.Usagef("%s", strings.Replace(err.Error(), "--ready", "--health", 1))
		}
	}
	if cfg.Ready.Kind == "accept" {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/fdinfo", os.Getpid())); err != nil {
			return nil, config.Usagef("handoff run: --ready accept: %v — it needs /proc (mount it, or use --ready notify)", err)
		}
	}

	if err := os.MkdirAll(filepath.Dir(cfg.Control), 0o755); err != nil {
		return nil, fmt.Errorf("handoff: control socket directory: %w", err)
	}
	cln, err := u.Listen("", "unix://"+cfg.Control+"?mode=0600")
	if err != nil {
		return nil, fmt.Errorf("handoff: control socket: %w", err)
	}
	base := os.Getenv("RUNTIME_DIRECTORY")
	base, _, _ = strings.Cut(base, ":")
	if base == "" {
		base = os.TempDir()
	}
	if s.runDir, err = os.MkdirTemp(base, "handoff-"); err != nil {
		return nil, fmt.Errorf("handoff: run directory: %w", err)
	}
	// Generations running as another user must reach their notify socket.
	if err := os.Chmod(s.runDir, 0o711); err != nil {
		return nil, fmt.Errorf("handoff: run directory: %w", err)
	}
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
		// Through the upgrader, so that a new handoff (SIGUSR2) serves on
		// the same socket.
		mln, err := u.Listen("tcp", cfg.Metrics)
		if err != nil {
			// As a --listen socket that cannot be bound: the machine's
			// state, not the command line's fault (exit 1).
			return nil, fmt.Errorf("handoff run: --metrics: %w", err)
		}
		go s.serveMetrics(mln)
		go func() { <-u.Exit(); mln.Close() }()
	}
	return s, nil
}

// openSockets opens the sockets to pass on through u, so that a new handoff
// inherits them: the --listen addresses, else every socket systemd passed
// (or the old handoff, after SIGUSR2), by name. It returns their local
// addresses.
func (s *supervisor) openSockets(u *upgrader.Upgrader) ([]net.Addr, error) {
	inherited, fromParent := os.LookupEnv(envSystemdNames)
	os.Unsetenv(envSystemdNames)
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
		f, sock, err := openSocket(u, l.Addr)
		if err != nil {
			return nil, err
		}
		s.sockets = append(s.sockets, sock)
		s.files = append(s.files, f)
		s.names = append(s.names, l.Name)
		s.addrs = append(s.addrs, l.Addr.String())
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return nil, fmt.Errorf("handoff: %s: %w", l.Addr, os.NewSyscallError("fstat", err))
		}
		if ln, ok := sock.(*net.TCPListener); ok {
			if err := doors.DetachFilter(ln); err != nil {
				s.log.Warn("cannot remove a socket filter a stopping handoff may have left: connections to this socket may be dropped", "event", "start.filter_stays", "addr", l.Addr.String(), "err", err)
			}
		}
		s.inodes = append(s.inodes, st.Ino)
		s.stored = append(s.stored, l.Addr.Network != "systemd" && (s.cfg.FDStore || os.Getenv("FDSTORE") != ""))
		held = append(held, localAddr(sock))
	}
	return held, nil
}

// openSocket opens a through the upgrader, so that a new handoff inherits
// it, and returns a descriptor to pass to generations, and the listener or
// packet conn, which the caller keeps open.
func openSocket(u *upgrader.Upgrader, a listener.Addr) (*os.File, io.Closer, error) {
	var c io.Closer
	if a.Packet() {
		pc, err := u.ListenPacketAddr(a)
		if err != nil {
			return nil, nil, err
		}
		c = pc
	} else {
		ln, err := u.ListenAddr(a)
		if err != nil {
			return nil, nil, err
		}
		c = ln
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		c.Close()
		return nil, nil, fmt.Errorf("handoff: %s: cannot pass this socket on", a)
	}
	file, err := passable(sc, a.String())
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("handoff: %s: %w", a, err)
	}
	return file, c, nil
}

// passable returns a duplicate of the socket for exec.Cmd.ExtraFiles that
// leaves the socket in non-blocking mode. All generations share one open
// file description, and with it its O_NONBLOCK flag. The *os.File of
// net's File method makes os.StartProcess clear that flag (golang/go#43894):
// an older generation's Go runtime then blocks in accept(2) in the kernel,
// and its listener's Close waits until a connection arrives — a drain with
// no traffic hangs until the drain timeout. A descriptor that was already
// non-blocking when given to os.NewFile is passed as it is.
func passable(sc syscall.Conn, name string) (*os.File, error) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := raw.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	return os.NewFile(uintptr(dup), name), nil
}

// localAddr returns the address a listener or packet conn is bound to.
func localAddr(c io.Closer) net.Addr {
	switch x := c.(type) {
	case net.Listener:
		return x.Addr()
	case net.PacketConn:
		return x.LocalAddr()
	}
	return nil
}

// statusTimeout bounds 'handoff status' and 'handoff signal', which the
// daemon answers at once.
const statusTimeout = 10 * time.Second

var clientHelp = map[string]string{
	"reload":   "Starts a new generation of the program and waits: exits 0 once it is ready,\n1 with the reason if it failed (the old generation then serves on).\nWorks as ExecReload= of a Type=notify unit.\n\nExample:\n  handoff reload --control /run/app/control.sock",
	"rollback": "While a new generation bakes (--bake), stops it and keeps the old one serving.\nOtherwise starts a new generation from what the previous current generation ran —\nits resolved program, arguments, directory and env file as they were — with the same\nreadiness, bake and drain as a reload; exits 0 once it serves, 1 with the reason.\n'handoff status' says what it would run.\n\nExample:\n  handoff rollback --control /run/app/control.sock",
	"status":   "Shows handoff's generations (pid, state, age, directory), restarts and sockets.\n\nExample:\n  handoff status --json",
	"signal":   "Sends a signal to the serving generation (and to the new one while it bakes), to its\nwhole process group: log reopening on USR1, a config reload on HUP. KILL, STOP and the\n--stop-signal are refused; use 'handoff reload' to replace a generation.\n\nUsage: handoff signal [--control PATH] SIG\n\nExample:\n  handoff signal USR1",
}

func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("handoff "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ctlPath := fs.String("control", config.DefaultControl(), "control socket `PATH` of the 'handoff run' to talk to. Example: --control /run/app/control.sock")
	fs.Usage = func() {}
	return fs, ctlPath
}

func parseClient(fs *flag.FlagSet, name string, args []string, stderr io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: handoff %s [flags]\n\n%s\n\nFlags:\n", name, clientHelp[name])
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return flag.ErrHelp
		}
		return config.Usagef("handoff %s: %v — see 'handoff %s --help'", name, err, name)
	}
	if fs.NArg() > 0 {
		return config.Usagef("handoff %s: unexpected argument %q — see 'handoff %s --help'", name, fs.Arg(0), name)
	}
	return nil
}

// cmdReload runs `handoff reload` and `handoff rollback` (cmd), which answer
// alike.
func cmdReload(args []string, stdout, stderr io.Writer, cmd string) int {
	fs, ctlPath := clientFlags(cmd, stderr)
	timeout := fs.Duration("timeout", 0, "give up waiting after this long (default: the longest the reload can take, from\n"+
		"'handoff run's --ready-timeout and --bake, as 'handoff status --json' reports it). Example: --timeout 2m")
	if err := parseClient(fs, cmd, args, stderr); err != nil {
		return exitFor(err, stderr)
	}
	if *timeout < 0 {
		return exitFor(config.Usagef("handoff %s: --timeout %v is negative — give a duration such as 2m", cmd, *timeout), stderr)
	}
	if *timeout == 0 {
		// Ask the daemon for its bound; this also proves that it answers.
		var st control.Status
		if err := control.Ask(*ctlPath, control.Message{Cmd: "status"}, statusTimeout, &st); err != nil {
			fmt.Fprintf(stderr, "handoff %s: %v\n", cmd, err)
			return 1
		}
		*timeout = time.Duration(st.ReloadBound * float64(time.Second))
		if *timeout <= 0 {
			*timeout = 2*(config.DefaultReadyTimeout) + 30*time.Second // a handoff from before the bound was reported
		}
	}
	var r machine.ReloadResult
	if err := control.Ask(*ctlPath, control.Message{Cmd: cmd}, *timeout, &r); err != nil {
		fmt.Fprintf(stderr, "handoff %s: %v\n", cmd, err)
		return 1
	}
	if !r.OK {
		fmt.Fprintf(stderr, "handoff %s: %s\n", cmd, r.Error)
		return 1
	}
	if r.Millis == 0 && cmd == "rollback" {
		fmt.Fprintf(stdout, "rolled back: generation %d (pid %d) serves on\n", r.Generation, r.PID)
		return 0
	}
	if len(r.PIDs) > 1 {
		fmt.Fprintf(stdout, "generation %d: %d workers (pids %s) ready in %d ms\n", r.Generation, len(r.PIDs), strings.Trim(fmt.Sprint(r.PIDs), "[]"), r.Millis)
		return 0
	}
	fmt.Fprintf(stdout, "generation %d (pid %d) ready in %d ms\n", r.Generation, r.PID, r.Millis)
	return 0
}

func cmdSignal(args []string, stdout, stderr io.Writer) int {
	fs, ctlPath := clientFlags("signal", stderr)
	timeout := fs.Duration("timeout", statusTimeout, "give up waiting for an answer after this long. Example: --timeout 30s")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "%s\n\nFlags:\n", clientHelp["signal"])
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 0
		}
		return exitFor(config.Usagef("handoff signal: %v — see 'handoff signal --help'", err), stderr)
	}
	if fs.NArg() != 1 {
		return exitFor(config.Usagef("handoff signal: give one signal, as in: handoff signal USR1"), stderr)
	}
	sig, err := config.SignalArg(fs.Arg(0))
	if err != nil {
		return exitFor(err, stderr)
	}
	var r control.SignalResult
	if err := control.Ask(*ctlPath, control.Message{Cmd: "signal", Signal: int(sig)}, *timeout, &r); err != nil {
		fmt.Fprintln(stderr, "handoff signal:", err)
		return 1
	}
	if !r.OK {
		fmt.Fprintln(stderr, "handoff signal:", r.Error)
		return 1
	}
	for i, pid := range r.Sent {
		fmt.Fprintf(stdout, "sent %s to generation %d (pid %d)\n", unix.SignalName(sig), r.Gens[i], pid)
	}
	return 0
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs, ctlPath := clientFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", statusTimeout, "give up waiting for an answer after this long. Example: --timeout 30s")
	if err := parseClient(fs, "status", args, stderr); err != nil {
		return exitFor(err, stderr)
	}
	if *timeout <= 0 {
		return exitFor(config.Usagef("handoff status: --timeout %v is not positive — give a duration such as 10s", *timeout), stderr)
	}
	var st control.Status
	if err := control.Ask(*ctlPath, control.Message{Cmd: "status"}, *timeout, &st); err != nil {
		fmt.Fprintln(stderr, "handoff status:", err)
		return 1
	}
	if st.Error != "" {
		fmt.Fprintln(stderr, "handoff status:", st.Error)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	fmt.Fprintf(stdout, "handoff pid %d running %s (restarts: %d, killed: %d", st.PID, st.Program, st.Restarts, st.Killed)
	if st.Unresponsive > 0 {
		fmt.Fprintf(stdout, ", replaced as hung: %d", st.Unresponsive)
	}
	if st.Reloading {
		fmt.Fprint(stdout, ", reloading")
	}
	if st.Queued {
		fmt.Fprint(stdout, ", reload queued")
	}
	fmt.Fprintln(stdout, ")")
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	if len(st.Workers) > 0 {
		fmt.Fprintln(tw, "WORKER\tGEN\tPID\tSTATE\tUPTIME\tRESTARTS\tHUNG\tRSS")
		for _, w := range st.Workers {
			rss := "-"
			if w.RSSBytes > 0 {
				rss = fmt.Sprintf("%.1f MiB", float64(w.RSSBytes)/(1<<20))
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%s\n", w.Index, w.Generation, w.PID, w.State, time.Duration(w.UptimeSeconds*float64(time.Second)).Round(time.Second), w.Restarts, w.Unresponsive, rss)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "GEN\tPID\tSTATE\tAGE\tDIR")
	for _, g := range st.Generations {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", g.Generation, g.PID, g.State, time.Duration(g.AgeSeconds*float64(time.Second)).Round(time.Second), g.Dir)
	}
	if r := st.Rollback; r != nil {
		fmt.Fprintf(tw, "\nrollback would run: %s", strings.Join(append([]string{r.Program}, r.Args...), " "))
		if r.Dir != "" {
			fmt.Fprintf(tw, " in %s", r.Dir)
		}
		fmt.Fprintf(tw, " (%d variables from the env file)\n", len(r.Env))
	}
	fmt.Fprintln(tw, "\nFD\tNAME\tADDRESS\t")
	for _, l := range st.Listeners {
		fmt.Fprintf(tw, "%d\t%s\t%s\t\n", l.FD, l.Name, l.Addr)
	}
	_ = tw.Flush()
	return 0
}
