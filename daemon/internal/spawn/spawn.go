//go:build linux

// Package spawn starts the processes of `handoff run`'s program and
// watches each: it resolves what a process runs (--chdir, symlinks, the
// env file read afresh), builds its environment (systemd's socket
// activation and notify variables, the worker index, and nothing handoff
// keeps for itself), opens its notify socket, starts it through the shim
// (package launch) with the sockets as fds 3 on, copies its output to
// handoff's, and reports on a channel when it is ready (--ready) and when
// it has exited, as the machine's events.
package spawn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/keeper"
	"github.com/handoff-dev/handoff/daemon/internal/launch"
	"github.com/handoff-dev/handoff/daemon/internal/outtag"
	"github.com/handoff-dev/handoff/daemon/internal/probe"
	"github.com/handoff-dev/handoff/daemon/internal/quicgroup"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
	"github.com/handoff-dev/handoff/daemon/internal/relay"
	"github.com/handoff-dev/handoff/internal/envfile"
	"github.com/handoff-dev/handoff/internal/lifecycle"
	"github.com/handoff-dev/handoff/internal/linetail"
	"github.com/handoff-dev/handoff/internal/quicsteer"
)

// A Process is one process of the program, started by Start, beside the
// machine's Gen. Its fields are set before Start returns; after that the
// goroutine that started it alone uses it (but for the time of its last
// WATCHDOG=1, written by the reader of its notify socket).
type Process struct {
	*gen.Gen

	cmd      *exec.Cmd
	notify   *net.UnixConn
	notifyAt string
	stdout   *linetail.Tail
	stderr   *linetail.Tail
	cancel   context.CancelFunc // stops the readiness wait
	exitedC  chan struct{}      // closed when it has exited
	readyC   chan struct{}      // closed when it is ready, before EvReady is sent
	// Handover holds handoff's ends of its handover channels (--handover),
	// or is nil.
	Handover *relay.Channels

	lastPing atomic.Int64 // UnixNano of its last WATCHDOG=1; 0 if it never sent one
}

// A Starter starts the program's processes as its configuration says. Its
// exported fields are set before the first Start and not changed after;
// Start, FlushOutputs and the Process methods are called from one
// goroutine.
type Starter struct {
	Config *config.Config
	Log    *slog.Logger
	// Self is the binary re-executed as the shim (package launch).
	Self string
	// RunDir is the directory of the notify sockets.
	RunDir string
	// Files are the sockets, passed as fds 3 on; Names their
	// LISTEN_FDNAMES; Sockets what --ready accept looks for.
	Files   []*os.File
	Names   []string
	Sockets []probe.Socket
	// Watchdog is the interval systemd asks handoff to ping at, given to
	// each process as WATCHDOG_USEC; 0 for none.
	Watchdog time.Duration
	Reaper   *reaper.Reaper
	Keeper   *keeper.Keeper // nil as PID 1
	QUIC     *quicgroup.Groups
	// Events receives, for each process, EvReady or EvNotReady, then
	// EvLeft (if it left processes behind) and EvExited.
	Events chan<- gen.Event
	// Strays returns the processes left behind that no EvLeft reported
	// yet, marking them reported.
	Strays func() []gen.Stray

	// firstInWd records, without --chdir, whether the first generation's
	// program lay in handoff's working directory (see checkWorkDir).
	firstInWd *bool
	// tagged holds handoff's stdout and stderr as --tag-output makes
	// them, set up at the first start; nil without it.
	tagged struct{ out, err *outtag.Sink }
	// tails are the processes' output copiers not yet done (outputs).
	tails []*linetail.Tail
}

// EnvNextGen carries the next generation number to a new handoff on
// SIGUSR2.
const EnvNextGen = "HANDOFF_NEXT_GEN"

// EnvSystemdNames carries to a new handoff on SIGUSR2 the names of the
// sockets systemd passed without --listen, in order, joined by ':' as in
// LISTEN_FDNAMES: the new handoff gets the sockets from its predecessor, not
// from systemd, so it cannot learn them otherwise.
const EnvSystemdNames = "HANDOFF_SYSTEMD_NAMES"

// withheldEnv lists the variables that never reach a generation from
// handoff's environment or its env file: those handoff sets for each
// generation itself (systemd's socket activation, notify and watchdog
// protocols, the worker index) and those that only handoff reads
// (tableflip's, and what an old handoff tells a new one on SIGUSR2). Every
// other variable — a user's own HANDOFF_... among them — passes through.
// docs/daemon.md lists them.
var withheldEnv = map[string]bool{
	"LISTEN_FDS": true, "LISTEN_FDNAMES": true, "LISTEN_PID": true,
	"NOTIFY_SOCKET": true, "WATCHDOG_USEC": true, "WATCHDOG_PID": true,
	"HANDOFF_WORKER": true, "HANDOFF_WORKERS": true, "HANDOFF_HANDOVER_FDS": true,
	EnvNextGen: true, EnvSystemdNames: true,
	"TABLEFLIP_HAS_PARENT_7DIU3": true, // tableflip's sentinel: this process has a parent to hand over from
	// A quic:// socket's slot and key (package quicgroup).
	quicsteer.EnvSlot: true, quicsteer.EnvKey: true,
}

// withheld reports whether the assignment kv sets one of withheldEnv.
func withheld(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	return withheldEnv[k]
}

// overrideEnv returns env with the assignments of extra replacing those of
// the same keys, leaving out the variables handoff sets itself.
func overrideEnv(env, extra []string) []string {
	keys := map[string]bool{}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	out := make([]string, 0, len(env)+len(extra))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !keys[k] {
			out = append(out, kv)
		}
	}
	for _, kv := range extra {
		if !withheld(kv) {
			out = append(out, kv)
		}
	}
	return out
}

// resolveSpec resolves what generation n runs from the configuration now:
// --chdir and the program's symlinks, and --env-file read afresh.
func (s *Starter) resolveSpec(n int) (*gen.Spec, error) {
	spec := &gen.Spec{Program: s.Config.Program, Args: s.Config.Args}
	if s.Config.EnvFile != "" {
		env, err := envfile.Read(s.Config.EnvFile)
		if err != nil {
			return nil, fmt.Errorf("generation %d: %w", n, err)
		}
		spec.Env = env
	}
	if s.Config.Chdir != "" {
		dir, err := filepath.EvalSymlinks(s.Config.Chdir)
		if err != nil {
			return nil, fmt.Errorf("generation %d: --chdir %s: %w", n, s.Config.Chdir, err)
		}
		spec.Dir = dir
		if !filepath.IsAbs(spec.Program) {
			spec.Program = filepath.Join(dir, spec.Program)
		}
	}
	spec.Name = spec.Program
	if real, err := filepath.EvalSymlinks(spec.Program); err == nil {
		spec.Program = real
	}
	if s.Config.Chdir == "" {
		s.checkWorkDir(n, spec.Program)
	}
	return spec, nil
}

// checkWorkDir warns, without --chdir, when generation n would start in a
// working directory that is the wrong one: handoff's own, removed since (a
// release directory deleted after a `current` symlink moved on), or one
// that held the first generation's program but not this one's.
func (s *Starter) checkWorkDir(n int, program string) {
	const fix = "give --chdir the symlinked directory (--chdir /srv/app/current): it is resolved afresh for each generation"
	// The kernel's idea of it, which the generation inherits: not $PWD.
	wd, err := unix.Getwd()
	if err != nil {
		s.Log.Warn("generation starts in handoff's working directory, which is gone", "event", "generation.workdir_gone", "gen", n, "err", err, "fix", fix)
		return
	}
	inside := lifecycle.Within(program, wd)
	if s.firstInWd == nil {
		s.firstInWd = &inside
	} else if *s.firstInWd && !inside {
		s.Log.Warn("generation starts in handoff's working directory, which holds an earlier release, not its program", "event", "generation.workdir_old",
			"gen", n, "program", program, "dir", wd, "fix", fix)
	}
}

// Start runs process w of generation n of the program through the shim —
// as spec says, or as the configuration resolves now if spec is nil — with
// the sockets as fds 3 on, and reports its readiness and exit on Events.
// An error names the generation and says what to change where the system
// refused (the environment too large, out of descriptors); nothing was
// started then.
func (s *Starter) Start(n, w int, spec *gen.Spec) (*Process, error) {
	g := &Process{Gen: &gen.Gen{N: n, W: w, Started: time.Now()}}
	if spec == nil {
		var err error
		if spec, err = s.resolveSpec(n); err != nil {
			return nil, err
		}
	}
	g.Spec, g.Dir = spec, spec.Dir
	program := spec.Program
	env, err := s.environ(g)
	if err != nil {
		return nil, err
	}

	var theirs []*os.File // the process's ends of its handover channels
	if s.Config.Handover {
		var hv string
		if g.Handover, theirs, hv, err = relay.NewChannels(len(s.Files)); err != nil {
			g.closeNotify()
			return nil, fmt.Errorf("generation %d: %w", n, err)
		}
		env = append(env, hv)
	}
	closeTheirs := func() {
		for _, f := range theirs {
			f.Close()
		}
	}
	defer closeTheirs() // the process has its copies, or failed to start
	outR, outW, err := os.Pipe()
	if err != nil {
		g.Handover.Close()
		g.closeNotify()
		return nil, fmt.Errorf("generation %d: %w", n, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		g.Handover.Close()
		g.closeNotify()
		return nil, fmt.Errorf("generation %d: %w", n, err)
	}
	// The sockets, a quic:// one this process's own, then the process's
	// ends of its handover channels.
	qfiles, qenv, err := s.QUIC.Spawn(g.Gen, s.Files)
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		g.Handover.Close()
		g.closeNotify()
		return nil, err
	}
	files := append(append([]*os.File(nil), qfiles...), theirs...)
	env = append(env, qenv...)
	ls := launch.Spec{
		Self: s.Self, Path: program, Args: append([]string{spec.Name}, spec.Args...),
		Dir: g.Dir, Env: env, ExtraFiles: files, Stdout: outW, Stderr: errW,
		// Its own process group: a Ctrl-C at the terminal reaches handoff
		// alone, which stops the generations in order.
		// If handoff dies (SIGKILL, the OOM killer), the generation gets
		// its stop signal and drains, rather than serving on unmanaged
		// with the sockets that a new handoff needs (see package daemon).
		Attr:     syscall.SysProcAttr{Setpgid: true, Credential: s.Config.Credential, Pdeathsig: s.Config.StopSignal},
		Watchdog: s.Watchdog > 0,
	}
	var cmd *exec.Cmd
	forked := time.Now()
	g.Prepare = forked.Sub(g.Started)
	err = s.Reaper.Start(func() (int, error) {
		var err error
		if cmd, g.Launch, err = launch.Start(ls); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		g.Handover.Close()
		g.closeNotify()
		s.QUIC.NotStarted(g.Gen)
		if errors.Is(err, syscall.E2BIG) {
			size := 0
			for _, kv := range append(env, ls.Args...) {
				size += len(kv) + 1
			}
			return nil, fmt.Errorf("generation %d: starting %s: its environment and arguments, %d bytes, are more than Linux passes to a program (see getconf ARG_MAX) — shrink the env file or the environment: %w", n, program, size, err)
		}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			return nil, fmt.Errorf("generation %d: starting %s: out of file descriptors (each worker takes 3 in handoff, 5 with --handover: raise the limit, ulimit -n or LimitNOFILE=): %w", n, program, err)
		}
		return nil, fmt.Errorf("generation %d: starting %s: %w", n, program, err)
	}
	g.cmd, g.PID = cmd, cmd.Process.Pid
	g.Exec = time.Since(forked)
	s.Keeper.Hold(g.Key(), g.PID, outR, errR)
	g.stdout, g.stderr = s.outputs(g, outR, errR)

	s.watch(g)
	return g, nil
}

// environ returns the environment of generation g: handoff's own, without
// what systemd meant for handoff alone, with g's env file over it, and the
// socket activation variables; it opens g's notify socket for NOTIFY_SOCKET.
func (s *Starter) environ(g *Process) ([]string, error) {
	env := make([]string, 0, len(os.Environ())+4)
	for _, kv := range os.Environ() {
		if !withheld(kv) {
			env = append(env, kv)
		}
	}
	env = overrideEnv(env, g.Spec.Env)
	env = append(env, "LISTEN_FDS="+strconv.Itoa(len(s.Files)), "LISTEN_FDNAMES="+strings.Join(s.Names, ":"))
	// Its worker index, and PM2's name for it, which Node programs read.
	w := strconv.Itoa(g.W)
	env = overrideEnv(env, []string{"NODE_APP_INSTANCE=" + w})
	env = append(env, "HANDOFF_WORKER="+w, "HANDOFF_WORKERS="+strconv.Itoa(max(s.Config.Workers, 1)))
	var err error
	if g.notify, g.notifyAt, err = s.notifySocket(g); err != nil {
		return nil, err
	}
	env = append(env, "NOTIFY_SOCKET="+g.notifyAt)
	if wd := s.Watchdog; wd > 0 {
		// launch adds WATCHDOG_PID. A program that pings is watched by
		// handoff, which answers for the whole service to systemd.
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(wd.Microseconds(), 10))
	}
	return env, nil
}

// watch waits, in goroutines of its own, for generation g to exit and to be
// ready within --ready-timeout, and sends on Events what happened:
// EvLeft and EvExited, EvReady or EvNotReady.
func (s *Starter) watch(g *Process) {
	cmd := g.cmd
	ctx, cancel := context.WithTimeout(context.Background(), s.Config.ReadyTimeout)
	g.cancel = cancel
	exitedC := make(chan struct{})
	g.exitedC = exitedC
	readyC := make(chan struct{})
	g.readyC = readyC
	go func() {
		err := cmd.Wait()
		s.Reaper.Done(cmd.Process.Pid)
		close(exitedC)
		// Let the last lines it printed reach the tails.
		for _, t := range []*linetail.Tail{g.stdout, g.stderr} {
			select {
			case <-t.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		if left := s.Strays(); len(left) > 0 {
			s.Events <- gen.EvLeft{G: g.Gen, Strays: left}
		}
		s.Events <- gen.EvExited{G: g.Gen, Err: err, How: launch.DescribeExit(err), Lines: g.lastLines()}
	}()
	notifyConn := g.notify
	go func() {
		defer cancel()
		err := s.waitReady(ctx, g, notifyConn, exitedC)
		switch {
		case err == nil:
			close(readyC)
			s.Events <- gen.EvReady{G: g.Gen}
		case errors.Is(err, errGenExited):
		default:
			var na *probe.NotAccepting
			why := ""
			if errors.As(err, &na) || errors.Is(err, errNoReadyNotify) {
				why = err.Error()
			}
			s.Events <- gen.EvNotReady{G: g.Gen, Why: why}
		}
	}()
}

var errGenExited = errors.New("exited")

// errNoReadyNotify is why a generation is not ready in notify mode.
var errNoReadyNotify = errors.New("it never sent READY=1 to $NOTIFY_SOCKET — for a program that does not, use --ready accept")

// waitReady returns nil once the generation is ready by the configured mode, errGenExited
// if it exits first, or ctx's error.
func (s *Starter) waitReady(ctx context.Context, g *Process, notifyConn *net.UnixConn, exitedC <-chan struct{}) error {
	readyC := make(chan error, 1)
	notified := make(chan struct{})
	// Read the notify socket for the generation's whole life: a program
	// that keeps sending (STATUS=, WATCHDOG=1) must never block on a full
	// queue.
	go readNotify(notifyConn, notified, &g.lastPing)
	switch s.Config.Ready.Kind {
	case "notify":
		go func() {
			select {
			case <-notified:
				readyC <- nil
			case <-ctx.Done():
				readyC <- errNoReadyNotify
			}
		}()
	case "accept":
		go func() { readyC <- probe.WaitAccepting(ctx, g.PID, s.Sockets) }()
	default:
		mode := s.Config.Ready.ForWorker(g.W)
		go func() { readyC <- probe.Ready(ctx, mode) }()
	}
	select {
	case err := <-readyC:
		select {
		case <-exitedC:
			return errGenExited
		default:
		}
		return err
	case <-exitedC:
		return errGenExited
	}
}

// readNotify reads conn until it is closed: it closes ready at the first
// READY=1, and records the time of each WATCHDOG=1 in lastPing.
func readNotify(conn *net.UnixConn, ready chan<- struct{}, lastPing *atomic.Int64) {
	buf := make([]byte, 4096)
	seen := false
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			switch {
			case line == "READY=1" && !seen:
				seen = true
				close(ready)
			case line == "WATCHDOG=1":
				lastPing.Store(time.Now().UnixNano())
			}
		}
	}
}

// notifySocket creates g's NOTIFY_SOCKET, writable by the user the program
// runs as.
func (s *Starter) notifySocket(g *Process) (*net.UnixConn, string, error) {
	n := g.N
	path := filepath.Join(s.RunDir, fmt.Sprintf("gen-%s.notify", g.Key()))
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, "", fmt.Errorf("generation %d: notify socket: %w", n, err)
	}
	if c := s.Config.Credential; c != nil {
		if err := os.Chown(path, int(c.Uid), int(c.Gid)); err != nil {
			conn.Close()
			return nil, "", fmt.Errorf("generation %d: notify socket: %w", n, err)
		}
	}
	return conn, path, nil
}

// Key names process g uniquely among those handoff runs: its generation
// and worker index ("2.0").
func (g *Process) Key() string { return fmt.Sprintf("%d.%d", g.N, g.W) }

// Release lets go of what handoff holds for g once it has exited or was
// never ready: the readiness wait, the notify socket, the handover
// channels. It may be called more than once.
func (g *Process) Release() {
	g.CancelReady()
	g.closeNotify()
	g.Handover.Close()
}

// CancelReady ends the wait for g's readiness: no EvReady or EvNotReady
// comes after it.
func (g *Process) CancelReady() {
	if g.cancel != nil {
		g.cancel()
	}
}

// Exited is closed once g's process has exited.
func (g *Process) Exited() <-chan struct{} { return g.exitedC }

// Ready is closed once g's process is ready, before EvReady is sent.
func (g *Process) Ready() <-chan struct{} { return g.readyC }

// LastPing returns when g's process last sent WATCHDOG=1, or the zero time
// if it never did.
func (g *Process) LastPing() time.Time {
	if n := g.lastPing.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (g *Process) closeNotify() {
	if g.notify != nil {
		g.notify.Close()
		os.Remove(g.notifyAt)
		g.notify = nil
	}
}

// Signal sends sig to the process's group, so that a shell wrapper and its
// children hear it too. It does nothing on a nil Process.
func (g *Process) Signal(sig syscall.Signal) {
	if g != nil && g.PID > 0 {
		_ = unix.Kill(-g.PID, sig)
	}
}

// lastLines returns the last lines the generation printed, stderr first.
func (g *Process) lastLines() []string {
	if g.stderr == nil || g.stdout == nil {
		return nil
	}
	lines := g.stderr.Last()
	if len(lines) == 0 {
		lines = g.stdout.Last()
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return lines
}
