package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/drain"
	"github.com/handoff-dev/handoff/internal/holdback"
	"github.com/handoff-dev/handoff/internal/sdjob"
	"github.com/handoff-dev/handoff/listener"
	"github.com/handoff-dev/handoff/systemd"
)

// Defaults for the zero values of Options. A drain's defaults are package
// drain's: drain.DefaultTimeout for DrainTimeout, drain.DefaultIdleGrace for
// IdleGrace.
const (
	// DefaultUpgradeTimeout is the UpgradeTimeout of a zero
	// Options.UpgradeTimeout.
	DefaultUpgradeTimeout = time.Minute
	// DefaultBake is the bake window of a zero Options.Bake.
	DefaultBake = 10 * time.Second
	// MinBake is the shortest bake window Options.Bake accepts: the
	// checks need a few looks at the sockets to tell anything.
	MinBake = 250 * time.Millisecond
)

// DefaultDrainTimeout is drain.DefaultTimeout.
//
// Deprecated: use drain.DefaultTimeout, the one name of this default.
const DefaultDrainTimeout = drain.DefaultTimeout

// DefaultIdleGrace is drain.DefaultIdleGrace.
//
// Deprecated: use drain.DefaultIdleGrace, the one name of this default.
const DefaultIdleGrace = drain.DefaultIdleGrace

// FDStoreName is the FDNAME under which sockets go to systemd's fd store;
// after a restart they come back through socket activation with this name,
// and Listen finds each by its address.
const FDStoreName = "handoff-fdstore"

// parentKillGrace is how long past its announced drain deadline a predecessor
// may live before a queued upgrade kills it.
const parentKillGrace = 5 * time.Second

// Options configure an Upgrader. The zero value is usable.
type Options struct {
	// PIDFile, if set, is written with the pid of each generation when it
	// becomes ready (atomically, by rename), and removed on a real stop. New
	// fails with ErrPIDFile if it cannot be written there.
	PIDFile string
	// UpgradeTimeout bounds how long a new generation may take to become
	// ready; past it, it is killed and the old one keeps serving.
	// Default DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration
	// DrainTimeout bounds how long requests in flight may take to finish
	// once the generation drains; past it, what is left is closed.
	// Default drain.DefaultTimeout.
	DrainTimeout time.Duration
	// IdleGrace is how long a connection may stay idle after the drain began
	// before it is closed. Default drain.DefaultIdleGrace.
	IdleGrace time.Duration
	// Logger receives one line per event, each with the keys event, gen
	// (this generation's number) and pid, the last two added with
	// Logger.With: a handler that renames or drops keys in WithAttrs sees
	// them there. Default: text to stderr.
	Logger *slog.Logger
	// NoSignals, if true, leaves SIGHUP, SIGTERM and SIGINT alone; the caller
	// then drives the Upgrader with Upgrade and Stop.
	NoSignals bool
	// FDStore, if true, stores the listening sockets in systemd's file
	// descriptor store (FDSTORE=1) once ready, so that they stay open while
	// the service restarts or after it crashes; the next start gets them back
	// through socket activation and Listen finds them by address. A Unix
	// socket's file is then left in place on stop (systemd may still hold
	// the socket); a later fresh start replaces it if nothing answers on it.
	// The unit needs FileDescriptorStoreMax=. It is on by itself when
	// systemd sets $FDSTORE (systemd 254 and later, when
	// FileDescriptorStoreMax= is set).
	FDStore bool
	// StopDelay, if positive, is how long this generation keeps serving and
	// accepting after SIGTERM or SIGINT before it drains, so that a load
	// balancer that learns of the stop late (kube-proxy, an ALB target
	// group, HAProxy health checks) stops sending new connections first.
	// Health answers 503 from the signal on. A second stop signal skips the
	// rest of the delay; a third cuts the drain. Stop does not wait for it.
	// Default 0: drain at once.
	StopDelay time.Duration
	// WatchdogCheck, if set, is called before each watchdog ping; an error
	// skips the ping, so that systemd's WatchdogSec= catches a generation
	// that is alive but not working.
	WatchdogCheck func(context.Context) error
	// Held, if set, is asked by Listen and ListenPacket for a socket of the
	// address that no parent passed, before systemd's and a fresh bind: one
	// another process kept open for this service (handoff run's keeper holds
	// the sockets of a handoff that was killed). It returns the socket, which
	// the Upgrader then owns and passes on like one it bound, or nil.
	Held func(a listener.Addr) *os.File
	// Bake bounds the bake window: how long a new generation that called
	// Ready has to prove that it serves before this generation hands over
	// to it. In order: this generation stops taking new connections off
	// the sockets, which stay open in both (its Drainers pause; the
	// connections it has are served on), so that new connections reach
	// the new generation alone; as soon as the new generation has answered
	// a request (or, where nothing comes, a connection of this one's own:
	// an HTTP "OPTIONS *"), the upgrade goes on as without a bake: this
	// generation hands over and drains. If instead it exits, leaves
	// connections waiting in the accept queue for half a second, leaves 3
	// requests unanswered for 2 s, or proves nothing before Bake is over,
	// it is killed, this generation takes the waiting connections and
	// serves on, Upgrade returns an *UpgradeError of kind ErrBake, and a
	// later upgrade may be tried. Connections that waited in the queue are
	// not lost; those the new generation accepted and did not answer are.
	//
	// The bake needs both generations to serve through a Drainer (Serve,
	// ServeTLS, ServeDrainer): the old one to step aside, the new one to
	// count what it answered; where the old one has none it is skipped
	// (logged as bake.skipped), and a new one without any is held to
	// taking connections. A release older than this option hands over at
	// Ready. The new generation writes the PID file, and systemd learns
	// its pid, once it has proved itself.
	//
	// Default DefaultBake; negative: no bake, hand over at Ready. New
	// refuses a positive value below MinBake.
	Bake time.Duration
	// MoveIdleConns, if true, hands the idle HTTP/1.1 keep-alive
	// connections of a generation that hands over to the new generation
	// instead of closing them, which removes the race of the drain's
	// close with a request the client sends just then (see
	// docs/library.md). It applies to the TCP listeners from Listen
	// served through Serve or ServeDrainer, over plain HTTP/1.1 (not TLS,
	// not HTTP/2, not hijacked), on Linux; the new generation must set it
	// too, and each connection it takes comes out of the Accept of its
	// listener of the same address, to be served by its own http.Server
	// as if it had accepted it. What is guaranteed, in order:
	//
	//   - Only a connection whose server waits for its next request with
	//     no byte of it read moves; its server's read is stopped without
	//     consuming a byte (package drain's Drainer.MoveIdle), and the
	//     bytes the client sends meanwhile wait in the kernel for
	//     whichever generation owns it next. One whose next request has
	//     begun is served here, with "Connection: close".
	//   - It moves through Handover (see there): one owner at a time; a
	//     connection the new generation refuses, or whose batch is
	//     aborted, is served on here as if nothing had happened, and
	//     drains as without this option.
	//   - Connections that do not move drain as without it: at a stop,
	//     with a new generation that does not set it, over TLS.
	//
	// With it set, the Handover is made at Ready if the program did not
	// make its own; the connections moved this way never come out of
	// Adopted, and states that begin with a zero byte followed by
	// "handoff:" are the Upgrader's. Listen then returns, for TCP, a
	// wrapper rather than a *net.TCPListener; a listener wrapper of the
	// program's that reads a preamble of each connection (the PROXY
	// protocol) cannot take a moved connection: leave the option unset
	// there. Default false: idle connections are
	// closed after IdleGrace, as before.
	MoveIdleConns bool
}

// Upgrader hands the listening sockets of one generation to the next. Create
// it with New, at most once per process.
type Upgrader struct {
	opts    Options
	log     *slog.Logger
	core    core // tableflip where sockets can be passed on
	lc      listener.Config
	gen     int
	started time.Time

	parentPid  int           // 0 for the first generation
	parentCtl  *ctl          // to the parent; nil for the first generation
	parentGone chan struct{} // closed when the parent has exited
	parentStat atomic.Pointer[drainStatus]
	trueStderr *os.File // the real stderr, while fd 2 is a pipe to the parent
	// stderrOnce gives fd 2 back its real stderr, at Ready or when the
	// parent dies first; pipeC catches SIGPIPE until then.
	stderrOnce sync.Once
	pipeC      chan os.Signal
	becameMain chan struct{}

	watchdog time.Duration
	// mainMu orders watchdog pings with the MAINPID= that hands systemd's
	// main process over; notMain is set then.
	mainMu  sync.Mutex
	notMain bool

	sockMu    sync.Mutex
	sockets   []syscall.Conn // every socket Listen returned, for the fd store
	listeners []net.Listener // the stream ones, which a bake probes
	// ownListeners are the stream ones not from a .socket unit, which
	// close for good with the last process that holds them (see holdBack).
	ownListeners []net.Listener
	drainers     []*drain.Drainer
	// parentBake is the bake window the parent announced (0: none, or a
	// release without bakes).
	parentBake time.Duration
	// nameUses counts the requests for each systemd:NAME; see regAddr.
	nameUses map[string]int
	// ownPaths are the files of the Unix sockets asked for by path, not
	// from a .socket unit: removed on a plain stop when the sockets are in
	// the fd store (see releaseStore).
	ownPaths []string
	// readyHooks run at the start of Ready (see OnReady).
	readyHooks []func() error

	readyOnce sync.Once
	readyC    chan struct{}
	// toldParent: tableflip told the previous generation that this one is
	// ready (it hands over), or could not because it had died.
	toldParent atomic.Bool
	// leftToParent: this generation stopped before it was ready, and left
	// the sockets to the previous generation (see beginStop).
	leftToParent atomic.Bool
	readyErr     error

	sigC     chan os.Signal
	statC    chan struct{} // the parent reported drain progress
	upgradeC chan chan error
	stopC    chan struct{}
	stopOnce sync.Once

	exitC      chan struct{} // closed once: handed over or stopping
	cutC       chan struct{} // closed once: drain no longer, close everything
	drained    atomic.Bool   // the drain has ended
	handedOver atomic.Bool
	stopAsked  atomic.Bool         // a stop was asked (Health answers 503)
	jobs       *jobs               // background work started with Go
	childCtl   atomic.Pointer[ctl] // to the generation we handed over to
	book       metricsBook         // see Metrics
	finishOnce sync.Once

	// The handover of connections (handover.go): this generation's
	// Handover, and our end of the handover channel of the latest attempt.
	hoMu   sync.Mutex
	ho     *Handover
	hoNext atomic.Pointer[net.UnixConn]
	// idleLns are the listeners that take idle HTTP connections moved
	// from the previous generation, by address (see MoveIdleConns).
	idleLns map[string]*idleListener
}

// New prepares this process as a generation: it takes the sockets the
// previous generation passed (if any) and those systemd passed (LISTEN_FDS,
// consumed once), removes LISTEN_* and WATCHDOG_* from the environment, and,
// unless Options.NoSignals, handles SIGHUP (upgrade), SIGTERM and SIGINT
// (stop; a second one cuts the drain short). Call Listen for each socket,
// then Ready or Serve.
//
// Only the first call in a process succeeds.
func New(opts Options) (*Upgrader, error) {
	// adopt takes the early SIGPIPE channel if it needs it.
	defer early.release()
	if opts.UpgradeTimeout <= 0 {
		opts.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = drain.DefaultTimeout
	}
	if opts.IdleGrace <= 0 {
		opts.IdleGrace = drain.DefaultIdleGrace
	}
	switch {
	case opts.Bake == 0:
		opts.Bake = DefaultBake
	case opts.Bake > 0 && opts.Bake < MinBake:
		return nil, fmt.Errorf("upgrader: Options.Bake %v is shorter than MinBake (%v), too short to see a new generation serve; give at least %v, or a negative value for no bake", opts.Bake, MinBake, MinBake)
	}
	// A new generation checks the PID file while tableflip reads what the
	// parent passed; a first one before anything else, so that a bad path
	// leaves the process as it was.
	var pidErr chan error
	if opts.PIDFile != "" {
		if early == nil {
			if err := checkPIDFile(opts.PIDFile); err != nil {
				return nil, err
			}
		} else {
			pidErr = make(chan error, 1)
			go func() { pidErr <- checkPIDFile(opts.PIDFile) }()
		}
	}
	sig := watchSignals(opts.NoSignals)
	// Claim systemd's sockets before anything can start a child: they are
	// not close-on-exec until then.
	systemd.Activated()
	c, err := newCore(opts)
	if pidErr != nil {
		if perr := <-pidErr; perr != nil {
			if err == nil {
				c.Stop()
			}
			sig.stop()
			return nil, perr
		}
	}
	if err != nil {
		sig.stop()
		return nil, fmt.Errorf("upgrader: %w", err)
	}
	// tableflip has read it; the programs this one starts must not think
	// they have a parent to hand over from (tableflip sets it again for the
	// next generation).
	os.Unsetenv(tableflipSentinel)
	return newWithCore(opts, c, sig)
}

// signals is the channel of the signals an Upgrader handles, set up in the
// background (see watchSignals).
type signals struct {
	c    chan os.Signal
	done chan struct{} // closed once signal.Notify has returned
}

// watchSignals starts relaying SIGHUP, SIGTERM and SIGINT to a channel
// (unless off), in a goroutine: the first signal.Notify of a process takes
// about a millisecond — the runtime starts a thread for signals and hands
// each one over to it — which a new generation spends adopting its sockets
// meanwhile. Wait for it with wait before relying on the handlers.
func watchSignals(off bool) *signals {
	s := &signals{c: make(chan os.Signal, 8), done: make(chan struct{})}
	if off {
		close(s.done)
		return s
	}
	go func() {
		defer close(s.done)
		signal.Notify(s.c, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	}()
	return s
}

func (s *signals) wait() { <-s.done }

// stop undoes watchSignals.
func (s *signals) stop() {
	s.wait()
	signal.Stop(s.c)
}

// newWithCore is New on a given core, with the signals from watchSignals.
func newWithCore(opts Options, c core, sig *signals) (*Upgrader, error) {
	var err error
	u := &Upgrader{
		opts:       opts,
		core:       c,
		gen:        1,
		started:    time.Now(),
		parentGone: make(chan struct{}),
		becameMain: make(chan struct{}),
		readyC:     make(chan struct{}),
		sigC:       sig.c,
		statC:      make(chan struct{}, 1),
		upgradeC:   make(chan chan error),
		stopC:      make(chan struct{}),
		exitC:      make(chan struct{}),
		cutC:       make(chan struct{}),
		jobs:       newJobs(),
	}
	if c.HasParent() {
		if err := u.adopt(); err != nil {
			c.Stop()
			sig.stop()
			return nil, err
		}
	} else {
		close(u.parentGone)
		close(u.becameMain)
		u.watchdog, err = systemd.WatchdogInterval()
		if err != nil {
			c.Stop()
			sig.stop()
			return nil, fmt.Errorf("upgrader: %w", err)
		}
	}
	base := opts.Logger
	if base == nil {
		base = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	u.log = base.With("gen", u.gen, "pid", os.Getpid())
	if opts.MoveIdleConns {
		u.OnReady(u.adoptIdle)
	}
	if c.HasParent() {
		go u.watchParent()
	}

	sig.wait()
	go u.run()
	return u, nil
}

// adopt reads what the parent passed besides the sockets: the control
// channel, with the generation number and watchdog interval, and the real
// stderr.
func (u *Upgrader) adopt() error {
	u.parentPid = os.Getppid()
	f, err := u.core.File(ctlName)
	if err != nil || f == nil {
		return fmt.Errorf("upgrader: the parent passed no control channel (%v); start the same binary as the previous generation", err)
	}
	c, err := ctlFromFile(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	fields, pipe, err := c.recvWithFile(time.Now().Add(5 * time.Second))
	if err != nil || len(fields) != 3 || fields[0] != "init" {
		c.close()
		if pipe != nil {
			pipe.Close()
		}
		return fmt.Errorf("upgrader: reading the parent's init message: %v %q", err, fields)
	}
	u.gen, _ = strconv.Atoi(fields[1])
	usec, _ := strconv.ParseInt(fields[2], 10, 64)
	u.watchdog = time.Duration(usec) * time.Microsecond
	// A parent that bakes sends "bake MS" in the same datagram as init:
	// it is read already, or not there at all (an older release).
	if f, err := c.recv(time.Now()); err == nil && len(f) == 2 && f[0] == "bake" {
		if ms, err := strconv.ParseInt(f[1], 10, 64); err == nil && ms > 0 {
			u.parentBake = time.Duration(ms) * time.Millisecond
		}
	}
	u.parentCtl = c
	_ = c.send("started %d", os.Getpid())
	if pipe != nil {
		// Until Ready, fd 2 is the parent's pipe (see startNext); the
		// stderr it replaces comes back at Ready, or as soon as the parent
		// dies. Meanwhile a write to the pipe of a parent killed with
		// SIGKILL fails with EPIPE instead of ending this process with
		// SIGPIPE, which Go does for fd 2 unless SIGPIPE is caught.
		if saved, err := dupFd(2); err == nil {
			u.pipeC = early.takePipeSignal()
			if err := dupOnto(pipe, 2); err == nil {
				u.trueStderr = saved
			} else {
				saved.Close()
			}
		}
		pipe.Close()
	}
	return nil
}

// watchParent closes parentGone once the parent has exited; if that happens
// before Ready, it gives fd 2 its real stderr back at once.
func (u *Upgrader) watchParent() {
	_ = u.core.WaitForParent(context.Background())
	close(u.parentGone)
	select {
	case <-u.readyC:
	default:
		u.restoreStderr()
	}
}

// restoreStderr gives fd 2 back the stderr it had before the parent's pipe
// replaced it, once.
func (u *Upgrader) restoreStderr() {
	u.stderrOnce.Do(func() {
		if u.trueStderr != nil {
			if err := dupOnto(u.trueStderr, 2); err != nil {
				u.log.Warn("cannot restore stderr", "event", "stderr.failed", "err", err)
			}
			u.trueStderr.Close()
			u.trueStderr = nil
		}
		if u.pipeC != nil {
			// Off the way to Ready: stopping a signal waits for the
			// runtime's signal thread. Meanwhile SIGPIPE is still caught:
			// a write to a broken stdout in that moment returns EPIPE
			// instead of ending the process.
			go signal.Stop(u.pipeC)
		}
	})
}

// orphaned reports whether the parent has died, waiting up to a second for
// the sign of it: a parent killed with SIGKILL breaks the control channel
// and the exit pipe together, and the pipe's end may be read a moment later.
func (u *Upgrader) orphaned() bool {
	select {
	case <-u.parentGone:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// Generation returns this process's generation number: 1 for the first
// process, one more for each handoff.
func (u *Upgrader) Generation() int { return u.gen }

// HasParent reports whether this generation was started by a previous one.
func (u *Upgrader) HasParent() bool { return u.parentPid != 0 }

// Listen returns a stream listener for network and address, inherited from
// the previous generation, else passed by systemd, else bound fresh, and
// registers it to be passed to the next generation. network is "tcp",
// "tcp4", "tcp6", "unix" or "systemd" (address is then the
// FileDescriptorName), or "" to give address in any form listener.Parse
// accepts, such as "unix:///run/app.sock?mode=0660". Call it before Ready:
// sockets inherited but not claimed by then are closed.
func (u *Upgrader) Listen(network, address string) (net.Listener, error) {
	a, err := parseNetAddr(network, address)
	if err != nil {
		return nil, err
	}
	return u.ListenAddr(a)
}

// ListenAddr is Listen for an address already parsed (see listener.Parse).
func (u *Upgrader) ListenAddr(a listener.Addr) (net.Listener, error) {
	key := u.regAddr(a)
	lc := u.lc
	held := false
	lc.Inherit = func(network, _ string) (net.Listener, error) {
		ln, err := u.inherit(network, key)
		if ln == nil && err == nil {
			if f := u.held(a); f != nil {
				defer f.Close()
				ln, err = net.FileListener(f)
				held = err == nil
			}
		}
		return ln, err
	}
	ln, src, err := lc.Listen(context.Background(), a)
	if err != nil {
		return nil, err
	}
	if src != listener.Inherited || held {
		if err := u.core.AddListener(u.registryNet(a.Network, src), key, ln); err != nil {
			ln.Close()
			return nil, fmt.Errorf("upgrader: %s: registering for handoff: %w", a, err)
		}
	}
	u.remember(ln)
	u.sockMu.Lock()
	u.listeners = append(u.listeners, ln)
	if src != listener.Activated {
		u.ownListeners = append(u.ownListeners, ln)
	}
	if a.Network == "unix" && src != listener.Activated && !strings.HasPrefix(a.Address, "@") {
		u.ownPaths = append(u.ownPaths, a.Address)
	}
	u.sockMu.Unlock()
	source := src.String()
	if held {
		source = "held"
	}
	u.log.Info("listening", "event", "listening", "addr", a.String(), "local", ln.Addr().String(), "source", source)
	return u.idleListen(ln), nil
}

// ListenPacket is Listen for datagram sockets: network "udp", "udp4", "udp6"
// or "systemd", or "" with address such as "udp://127.0.0.1:5353".
func (u *Upgrader) ListenPacket(network, address string) (net.PacketConn, error) {
	a, err := parseNetAddr(network, address)
	if err != nil {
		return nil, err
	}
	return u.ListenPacketAddr(a)
}

// ListenPacketAddr is ListenPacket for an address already parsed (see
// listener.Parse).
func (u *Upgrader) ListenPacketAddr(a listener.Addr) (net.PacketConn, error) {
	key := u.regAddr(a)
	lc := u.lc
	held := false
	lc.InheritPacket = func(network, _ string) (net.PacketConn, error) {
		pc, err := u.inheritPacket(network, key)
		if pc == nil && err == nil {
			if f := u.held(a); f != nil {
				defer f.Close()
				pc, err = net.FilePacketConn(f)
				held = err == nil
			}
		}
		return pc, err
	}
	pc, src, err := lc.ListenPacket(context.Background(), a)
	if err != nil {
		return nil, err
	}
	if src != listener.Inherited || held {
		if err := u.core.AddPacketConn(u.registryNet(a.Network, src), key, pc); err != nil {
			pc.Close()
			return nil, fmt.Errorf("upgrader: %s: registering for handoff: %w", a, err)
		}
	}
	u.remember(pc)
	source := src.String()
	if held {
		source = "held"
	}
	u.log.Info("listening", "event", "listening", "addr", a.String(), "local", pc.LocalAddr().String(), "source", source)
	return pc, nil
}

// held returns the socket Options.Held has for a, or nil.
func (u *Upgrader) held(a listener.Addr) *os.File {
	if u.opts.Held == nil {
		return nil
	}
	return u.opts.Held(a)
}

// remember keeps a socket for the fd store.
func (u *Upgrader) remember(c any) {
	if sc, ok := c.(syscall.Conn); ok {
		u.sockMu.Lock()
		u.sockets = append(u.sockets, sc)
		u.sockMu.Unlock()
	}
}

// storeSockets hands the sockets to systemd's fd store, if asked for.
// systemd ignores a descriptor it already holds, so every generation may
// store them again.
func (u *Upgrader) storeSockets() {
	if !u.fdStore() {
		return
	}
	u.sockMu.Lock()
	socks := append([]syscall.Conn(nil), u.sockets...)
	u.sockMu.Unlock()
	if len(socks) == 0 {
		return
	}
	ok, err := systemd.StoreFiles(FDStoreName, socks...)
	switch {
	case err != nil:
		u.log.Warn("cannot store the sockets in systemd's fd store", "event", "fdstore.failed", "err", err)
	case ok:
		u.log.Info("sockets stored in systemd's fd store", "event", "fdstore.stored", "count", len(socks))
	}
}

func parseNetAddr(network, address string) (listener.Addr, error) {
	switch network {
	case "", "tcp":
		return listener.Parse(address)
	case "systemd":
		return listener.Parse("systemd:" + address)
	}
	return listener.Parse(network + "://" + address)
}

// regAddr returns the address under which the socket asked for as a is
// passed to the next generation: a.Address, except that the n-th request
// (n > 1) for one systemd:NAME gets "NAME#n". A .socket unit with
// FileDescriptorName= names all its sockets alike, and each must be carried
// on, in the order they were asked for.
func (u *Upgrader) regAddr(a listener.Addr) string {
	if a.Network != "systemd" {
		return a.Address
	}
	u.sockMu.Lock()
	defer u.sockMu.Unlock()
	if u.nameUses == nil {
		u.nameUses = map[string]int{}
	}
	u.nameUses[a.Address]++
	if n := u.nameUses[a.Address]; n > 1 {
		return fmt.Sprintf("%s#%d", a.Address, n)
	}
	return a.Address
}

// releaseStore readies a real stop of sockets in systemd's fd store, and
// reports whether they are out of it (or were never in it). systemd
// empties the store once the unit has stopped, unless it restarts: the
// connections queued on a socket meanwhile — the generation has closed its
// copy, the store's still listens — would be reset, after their clients
// sent their requests. So on a plain stop (systemd's job for the unit is a
// "stop") the sockets are taken out of the store first (FDSTOREREMOVE=1),
// and the files of this service's Unix sockets removed, and a barrier waits
// until systemd has closed its copies: from then on the sockets live as
// long as this process holds them (see holdBack). On a restart, or where
// systemd cannot be asked, they stay in the store and queue for the next
// start.
func (u *Upgrader) releaseStore() bool {
	if !u.fdStore() {
		return true
	}
	u.sockMu.Lock()
	n, paths := len(u.sockets), slices.Clone(u.ownPaths)
	u.sockMu.Unlock()
	if n == 0 {
		return true
	}
	job, err := sdjob.StopJob()
	if err != nil || job != "stop" {
		u.log.Info("the sockets stay in systemd's fd store: connections to them queue for the next start", "event", "fdstore.kept", "job", job, "err", err)
		return false
	}
	sent, err := systemd.Notify("FDSTOREREMOVE=1\nFDNAME=" + FDStoreName)
	if !sent || err != nil {
		u.log.Warn("cannot take the sockets out of systemd's fd store: connections queued on them when it empties the store are reset", "event", "fdstore.release_failed", "err", err)
		return false
	}
	for _, p := range paths {
		if st, err := os.Lstat(p); err == nil && st.Mode().Type() == os.ModeSocket {
			_ = os.Remove(p)
		}
	}
	if _, err := systemd.Barrier(5 * time.Second); err != nil {
		// systemd may still hold its copies: holding connections back
		// would hold them back in the store too.
		u.log.Warn("cannot tell whether systemd has let go of the sockets in its fd store: connections queued on them when it empties the store are reset", "event", "fdstore.release_failed", "err", err)
		return false
	}
	u.log.Info("a plain stop: the sockets are out of systemd's fd store, and close with this process", "event", "fdstore.released", "sockets", n)
	return true
}

// holdBack readies the close of the stream sockets that close for good with
// this process — bound by it or an earlier generation, out of the fd store
// (released) — so that no connection is left queued on them when they
// close, to be reset after its client sent its request: new connections are
// held back (package holdback), and the servers, still accepting, take those
// already queued, for up to holdBackWait. A socket of a .socket unit is
// systemd's: it outlives the stop, and queues for the next start. A
// listener the program closed already is left alone.
func (u *Upgrader) holdBack(released bool) {
	if !released {
		return
	}
	u.sockMu.Lock()
	lns := slices.Clone(u.ownListeners)
	u.sockMu.Unlock()
	var set holdback.Set
	for _, ln := range lns {
		if err := set.Hold(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			u.log.Warn("cannot hold new connections back for the stop: those that come until the socket closes may be reset", "event", "stop.hold_failed", "addr", ln.Addr().String(), "err", err)
		}
	}
	if set.Len() == 0 {
		return
	}
	start := time.Now()
	u.resume() // a Drainer paused for a bake would leave its queue
	left, err := set.Wait(holdBackWait)
	if err != nil {
		u.log.Warn("cannot see the connections queued on the sockets: those left when they close are reset", "event", "stop.hold_failed", "err", err)
		return
	}
	u.log.Info("new connections held back; those queued were taken", "event", "stop.held", "sockets", set.Len(), "left", left, "took_ms", time.Since(start).Milliseconds())
}

// holdBackWait bounds how long a stop waits for the servers to take the
// connections queued once new ones are held back.
const holdBackWait = time.Second

// fdStore reports whether the sockets go to systemd's fd store.
func (u *Upgrader) fdStore() bool {
	return u.opts.FDStore || os.Getenv("FDSTORE") != ""
}

// registryNet is the network under which a socket is passed on. tableflip
// removes the file of a socket registered as "unix" when the process stops
// without handing over; the others are kept apart under a prefix so that it
// leaves their file alone: sockets systemd created, and, when they go to the
// fd store, sockets this process bound (systemd keeps them open across a
// restart, so their path must still lead to them).
func (u *Upgrader) registryNet(network string, src listener.Source) string {
	switch {
	case src == listener.Activated:
		return "systemd-" + network
	case u.fdStore() && strings.HasPrefix(network, "unix"):
		return "fdstore-" + network
	}
	return network
}

// registryPrefixes are the prefixes registryNet may put before a network.
var registryPrefixes = []string{"", "systemd-", "fdstore-"}

func (u *Upgrader) inherit(network, address string) (net.Listener, error) {
	for _, p := range registryPrefixes {
		if ln, err := u.core.Listener(p+network, address); ln != nil || err != nil {
			return ln, err
		}
	}
	return nil, nil
}

func (u *Upgrader) inheritPacket(network, address string) (net.PacketConn, error) {
	for _, p := range registryPrefixes {
		if pc, err := u.core.PacketConn(p+network, address); pc != nil || err != nil {
			return pc, err
		}
	}
	return nil, nil
}

// Ready marks this generation ready to serve. The first generation writes the
// PID file and sends READY=1 to systemd; a later one tells its predecessor,
// which bakes it (see Options.Bake) and then hands over: it tells systemd
// the new main pid and starts draining. A later generation writes the PID
// file, and closes the inherited sockets that no Listen call claimed, once
// the bake is over; Ready itself returns at once, so that it serves
// meanwhile. Calls after the first return the first call's result.
func (u *Upgrader) Ready() error {
	u.readyOnce.Do(func() {
		u.readyErr = u.ready()
		close(u.readyC)
	})
	return u.readyErr
}

func (u *Upgrader) ready() error {
	if err := u.runReadyHooks(); err != nil {
		return err
	}
	// orphan: the parent died before this generation was ready (killed
	// with SIGKILL, say). This one holds the sockets and can serve, so it
	// serves on as the only generation instead of stopping.
	orphan := false
	baking := false
	if u.parentCtl != nil {
		// From here on the parent may exit: stop writing to its pipe.
		u.restoreStderr()
		var err error
		if u.parentBake > 0 {
			// A parent that bakes waits for this generation to serve
			// before tableflip may hand over (see bake.go).
			counts := 0
			if len(u.drainerList()) > 0 {
				counts = 1
			}
			err = u.parentCtl.send("baking %d", counts)
			baking = err == nil
		}
		if err == nil {
			err = u.parentCtl.send("ready %d", os.Getpid())
		}
		if err != nil {
			if !u.orphaned() {
				return fmt.Errorf("upgrader: telling the parent pid %d we are ready: %w", u.parentPid, err)
			}
			orphan, baking = true, false
		}
	}
	if baking {
		u.log.Info("ready; baking: the previous generation hands over once this one has served", "event", "ready", "after_ms", time.Since(u.started).Milliseconds(), "bake_s", u.parentBake.Seconds())
		go u.reportWhileBaking()
		if u.watchdog > 0 {
			go u.pingWatchdog()
		}
		return nil
	}
	err := u.readyCore()
	if err != nil {
		// The PID file is written; only the parent could not be told.
		if !errors.Is(err, errParentUnreachable) || !u.orphaned() {
			return fmt.Errorf("upgrader: %w", err)
		}
		orphan = true
	}
	u.log.Info("ready", "event", "ready", "after_ms", time.Since(u.started).Milliseconds())
	switch {
	case u.parentCtl == nil:
		if _, err := systemd.Ready(u.status("ready")); err != nil {
			u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
		}
	case orphan:
		u.becomeMain("the previous generation exited before this one was ready")
	default:
		go u.followParent()
	}
	u.storeSockets()
	if u.watchdog > 0 {
		go u.pingWatchdog()
	}
	return nil
}

// becomeMain makes this generation the service's main process by itself,
// since its parent cannot hand over: it tells systemd its pid with READY=1,
// so that a Type=notify unit follows it, and says why.
func (u *Upgrader) becomeMain(why string) {
	u.log.Warn("the previous generation is gone; this one serves on as the main process", "event", "orphaned", "parent_pid", u.parentPid, "why", why)
	if _, err := systemd.ReadyMainPID(os.Getpid(), u.status("ready; its predecessor (pid "+strconv.Itoa(u.parentPid)+") died during the handover")); err != nil {
		u.log.Warn("sd_notify failed", "event", "notify.failed", "err", err)
	}
	close(u.becameMain)
}

// followParent reads the parent's messages after Ready: "main" once systemd
// knows this process as the main one, then drain progress. A parent that
// dies before it sent "main" never told systemd this process's pid: this one
// does.
func (u *Upgrader) followParent() {
	gotMain := false
	for {
		f, err := u.parentCtl.recv(time.Time{})
		if err != nil {
			if !gotMain {
				u.becomeMain("the previous generation exited before it handed over")
			}
			return // the parent has exited
		}
		if len(f) == 1 && f[0] == "main" && !gotMain {
			gotMain = true
			close(u.becameMain)
			continue
		}
		if len(f) == 1 && f[0] == "upgrade" {
			// An upgrade asked while the parent was starting us: ours
			// to carry out, once the parent has drained.
			go func() {
				select {
				case u.upgradeC <- nil:
				case <-u.exitC:
				}
			}()
		} else if len(f) == 2 && f[0] == "counters" {
			u.book.adopt(f[1])
		} else if len(f) == 2 && f[0] == "drained" {
			var d drainedMsg
			if json.Unmarshal([]byte(f[1]), &d) == nil {
				u.book.drained(time.Duration(d.Ms)*time.Millisecond, d.Stats, d.Jobs, d.Cancelled)
			}
		} else if st, ok := parseDrain(f); ok {
			u.parentStat.Store(&st)
			select {
			case u.statC <- struct{}{}:
			default:
			}
		}
	}
}

func (u *Upgrader) status(what string) string {
	return fmt.Sprintf("generation %d (pid %d) %s", u.gen, os.Getpid(), what)
}

// Exit returns a channel that is closed when this generation should stop
// serving: it has handed over to a new one, or it is stopping. Drain then.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// HandedOver reports whether this generation handed over to a new one, as
// opposed to stopping.
func (u *Upgrader) HandedOver() bool { return u.handedOver.Load() }

// Upgrade starts the next generation from the same binary path and arguments
// and blocks until it is ready and has proved it serves in its bake window
// (nil: this generation must now drain and exit, as Exit says) or has failed
// (an *UpgradeError: this generation keeps serving; of kind ErrBake when it
// was rolled back in its bake window, see Options.Bake). If the previous generation is still draining, Upgrade first waits
// for it to exit, at most until 5 s past the deadline it announced, after
// which it is killed. Calls made while an upgrade is pending join it and get
// its result; calls made once its new process has started queue one more
// upgrade after it (see the package documentation), and get nil if that one
// is passed on to the new generation. It returns ErrNotReady before Ready,
// ErrHandedOver after a successful upgrade, and ErrStopped once stopping. Where the system
// cannot pass sockets to a new process (Windows), it returns an error that
// wraps errors.ErrUnsupported, and the generation serves on.
func (u *Upgrader) Upgrade() error {
	res := make(chan error, 1)
	select {
	case u.upgradeC <- res:
	case <-u.exitC:
		if u.handedOver.Load() {
			return ErrHandedOver
		}
		return ErrStopped
	}
	return <-res
}

// Stop ends this generation for good, unless it has already handed over:
// upgrades are refused, Exit is closed, STOPPING=1 goes to systemd, and the
// Unix socket files this generation created are removed (on Exit, Serve
// drains). Stop does not wait for the drain: it waits at most a second for
// the Upgrader's goroutine to act, removes the PID file if it names this
// process, and logs the exit. It is safe to call more than once, and from a
// deferred call after Serve returned.
func (u *Upgrader) Stop() {
	u.requestStop()
	u.finish()
}

// requestStop asks the run loop to stop, and gives it a second to act before
// a deferred Stop returns and the process exits.
func (u *Upgrader) requestStop() {
	u.stopOnce.Do(func() { close(u.stopC) })
	select {
	case <-u.exitC:
	case <-time.After(time.Second):
	}
}

// finish removes what a real stop leaves behind. It runs once, after the
// drain, when the process is about to exit.
func (u *Upgrader) finish() {
	u.finishOnce.Do(func() {
		if u.handedOver.Load() {
			u.log.Info("exit", "event", "exit", "reason", "handed over")
			return
		}
		if u.leftToParent.Load() {
			u.log.Info("exit", "event", "exit", "reason", "not ready; the previous generation serves on")
			return
		}
		// tableflip closes the sockets and removes the files of Unix ones in
		// its own goroutine once stopped: wait for it, or on a busy machine
		// the process may exit first and leave the files behind.
		u.core.Stop()
		select {
		case <-u.core.Exit():
		case <-time.After(5 * time.Second):
			u.log.Warn("the sockets were not released within 5s of the stop; Unix socket files may be left behind", "event", "exit.sockets_held")
		}
		if u.opts.PIDFile != "" {
			if b, err := os.ReadFile(u.opts.PIDFile); err == nil && string(b) == strconv.Itoa(os.Getpid()) {
				os.Remove(u.opts.PIDFile)
			}
		}
		u.log.Info("exit", "event", "exit", "reason", "stopped")
	})
}
