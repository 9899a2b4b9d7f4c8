//go:build linux

package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/envfile"
	"github.com/handoff-dev/handoff/listener"
	"github.com/handoff-dev/handoff/systemd"
)

// ErrUsage marks an error in the command line; the command exits 2.
var ErrUsage = errors.New("usage")

// usageError is a command-line error: one line, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Is(target error) bool {
	return target == ErrUsage
}

// HoldPath is where the keeper of a handoff that died offers its sockets,
// and where a handoff started again with the same --control asks for them:
// the control socket's path and ".hold".
func (cfg *Config) HoldPath() string { return cfg.Control + ".hold" }

// Usagef returns an ErrUsage error with the message format and args give.
func Usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// Listen is one --listen flag: a socket and the name the program sees in
// LISTEN_FDNAMES.
type Listen struct {
	Name string
	Addr listener.Addr // udp for a QUIC socket
	// QUIC: --listen quic://HOST:PORT. Each generation gets a UDP socket
	// of its own in one SO_REUSEPORT group, steered by connection ID (see
	// package internal/quicsteer), instead of a socket shared by all.
	QUIC bool
}

// Config is what `handoff run` was asked to do.
type Config struct {
	Listens      []Listen
	Ready        Ready
	Health       Ready // checked during --bake and while serving: http or tcp, or none
	ReadyTimeout time.Duration
	DrainTimeout time.Duration
	StopDelay    time.Duration
	Hold         time.Duration // how long the keeper holds the sockets once handoff is gone; 0: not at all
	StopSignal   syscall.Signal
	Bake         time.Duration
	MaxDraining  int
	Workers      int   // processes per generation
	MaxSurge     int   // processes a roll runs beyond Workers
	MaxMemory    int64 // bytes of resident memory past which a worker is replaced; 0: none
	// HungAfter is how long a serving process may leave requests
	// unanswered, answering none, before it is replaced; 0: never.
	HungAfter time.Duration
	Metrics   string // HOST:PORT to serve /metrics on, or ""
	PIDFile   string
	Control   string
	Chdir     string // each generation's directory, resolved at its start
	EnvFile   string // read at each generation's start
	// Watch lists the files and directories (absolute, cleaned) whose
	// change in content starts a reload (--watch).
	Watch   []string
	FDStore bool
	// Handover: each process gets handover channels (HANDOFF_HANDOVER_FDS)
	// and handoff relays connections from a process to the one that
	// replaces it (--handover).
	Handover  bool
	LogFormat string // "text" or "json"
	// TagOutput is --tag-output: "" (off: the program's output passes
	// unchanged), "auto" (tagged; to journald's own protocol where
	// handoff's stream is the journal) or "stream" (tagged, on the stream).
	TagOutput string
	// Credential, if set, is the user and group the program runs as.
	Credential *syscall.Credential
	Program    string // as resolved in PATH
	Args       []string
}

// Defaults of `handoff run`, as --help gives them: --ready-timeout,
// --drain-timeout, --max-draining, --max-surge, --hung-after and --hold.
const (
	DefaultReadyTimeout = 60 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	DefaultMaxDraining  = 3
	DefaultMaxSurge     = 1
	DefaultHungAfter    = 3 * time.Second
	DefaultHold         = 10 * time.Second
	maxWorkers          = 1024
	// hungAfterMin is the shortest --hung-after: the liveness checks look
	// every 250 ms (package probe), and a request needs a moment to be
	// answered.
	hungAfterMin = 500 * time.Millisecond
)

const runUsage = `Usage: handoff run [flags] -- PROGRAM [ARGS...]

Runs PROGRAM with the listening sockets as fds 3.. (LISTEN_FDS, LISTEN_FDNAMES,
LISTEN_PID, as systemd's socket activation does), and on SIGHUP or
'handoff reload' starts a new generation of it with the same sockets, stopping
the old one only once the new one is ready. No request is refused meanwhile.
With --bake, a new generation that says it is ready but does not serve is
rolled back within seconds. With --workers N, each generation is N processes
on the same sockets, and a reload rolls them one at a time. A program must run
in the foreground: one that daemonizes fails, saying so. If handoff is killed,
the generations drain and exit, and their output still reaches handoff's;
its keeper holds the sockets for --hold, new connections waiting, and a
handoff started again with the same --control takes them and serves them.
A keeper that dies is replaced at once.

Example:
  handoff run --listen web=127.0.0.1:8080 --ready notify -- /usr/local/bin/app -config /etc/app.toml

Flags:
`

// runFlags holds the flags of 'handoff run' that are checked and converted
// after parsing, into a config.
type runFlags struct {
	listens, watches                                    []string
	ready, stop, health, userName, groupName, maxMemory *string
}

// runFlagSet defines the flags of 'handoff run': those that go straight into
// cfg, and the others into the returned runFlags.
func runFlagSet(cfg *Config) (*flag.FlagSet, *runFlags) {
	fs := flag.NewFlagSet("handoff run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	raw := &runFlags{}
	fs.Func("listen", "`[NAME=]ADDR` to listen on; repeatable. ADDR: HOST:PORT, :PORT, tcp6://[::1]:PORT,\n"+
		"unix:///run/app.sock?mode=0660, udp://HOST:PORT, quic://HOST:PORT or systemd:NAME.\n"+
		"NAME (default: the ADDR's systemd name, else \"listen<N>\") goes to LISTEN_FDNAMES.\n"+
		"Example: --listen web=:8080.\n"+
		"Without --listen, every socket systemd passed to handoff is passed on, with its name.\n"+
		"udp:// is one socket shared by every generation (stateless datagrams: DNS, syslog);\n"+
		"quic:// gives each generation a UDP socket of its own, and steers each datagram to the\n"+
		"generation whose connection it is (BPF: needs root or CAP_BPF and CAP_NET_ADMIN; Go\n"+
		"programs take it with github.com/handoff-dev/handoff/quic's Listen). Example:\n"+
		"--listen h3=quic://0.0.0.0:443.", func(s string) error {
		raw.listens = append(raw.listens, s)
		return nil
	})
	raw.ready = fs.String("ready", "notify", "when a new generation is ready: `MODE` is one of\n"+
		"  notify     it sends READY=1 to $NOTIFY_SOCKET (systemd's protocol);\n"+
		"  accept     one of its processes waits for connections on every socket it was given\n"+
		"             (epoll, accept, poll or select on it, seen in /proc): for programs that do\n"+
		"             not send READY=1, unchanged;\n"+
		"  http://HOST:PORT/PATH  answers 2xx;  tcp://HOST:PORT  accepts a connection;\n"+
		"  delay:DURATION  that long after it started.\n"+
		"An http or tcp address must be one the new generation serves alone: one of the\n"+
		"--listen sockets is refused, since the serving generation would answer for the new one.\n"+
		"Example: --ready accept")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", DefaultReadyTimeout, "a generation not ready within this is killed, and the reload fails. Example: --ready-timeout 30s")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "after the stop signal, a generation has this long to exit before SIGKILL. Example: --drain-timeout 10s")
	fs.DurationVar(&cfg.StopDelay, "stop-delay", 0, "on SIGTERM or SIGINT, let the generations serve on this long before they drain, so that a load\n"+
		"balancer deregisters this instance first; a second signal skips the rest. Example: --stop-delay 5s")
	fs.DurationVar(&cfg.Hold, "hold", DefaultHold, "if handoff is killed (SIGKILL, the OOM killer), its keeper holds the listening sockets this long:\n"+
		"new connections wait in the kernel's queue instead of being refused, and a 'handoff run' started\n"+
		"again with the same --control takes the sockets and serves them; past it they are closed and\n"+
		"connections refused. 0: close them with handoff. Not as PID 1. Example: --hold 30s")
	raw.stop = fs.String("stop-signal", "TERM", "`SIG`nal that asks a generation to drain and exit: TERM, INT, QUIT, USR1, USR2 or HUP. Example: --stop-signal QUIT")
	fs.DurationVar(&cfg.Bake, "bake", 0, "after a new generation is ready, keep the old one serving this long before stopping it, and\n"+
		"watch the new one: if it exits, takes no connection while the old one takes several, answers\n"+
		"nothing on connections that sent it requests 2 s ago, or fails --health 3 times in a row, it is\n"+
		"rolled back within seconds: the reload fails and the old one serves on. Example: --bake 10s")
	raw.health = fs.String("health", "", "check each serving process every second, and a new generation during --bake every 250 ms,\n"+
		"at `URL`: http://HOST:PORT/PATH must answer 2xx, tcp://HOST:PORT accept; an address only that\n"+
		"process serves (not a --listen socket). 3 failures in a row roll back a baking generation and\n"+
		"replace a serving one (see --hung-after). A --ready http:// or tcp:// probe is used when this is\n"+
		"not given. Example: --health http://127.0.0.1:9100/healthz")
	fs.DurationVar(&cfg.HungAfter, "hung-after", DefaultHungAfter, "replace a serving process, a new one ready first, when it is shown hung: it holds requests\n"+
		"unanswered this long or longer while it answers none and takes more, it takes no connection\n"+
		"while they wait this long, or it fails --health 3 times in a row. It is paused at once, so that\n"+
		"it takes no more. Requests slower than this that are answered raise the bar to twice the\n"+
		"slowest. 0 turns the checks off. Example: --hung-after 5s")
	fs.IntVar(&cfg.Workers, "workers", 1, "run each generation as `N` processes of the program, each given the same sockets, its own\n"+
		"LISTEN_PID and its index from 0 in HANDOFF_WORKER (and NODE_APP_INSTANCE), HANDOFF_WORKERS=N: for\n"+
		"programs that use one core. A reload rolls: each new worker is ready before the old one it\n"+
		"replaces drains, so N serve throughout; a new worker that fails stops the roll and the workers\n"+
		"already replaced are put back. With an http or tcp --ready or --health probe, worker I is probed\n"+
		"at its PORT plus I. Example: --workers 4")
	fs.IntVar(&cfg.MaxSurge, "max-surge", DefaultMaxSurge, "with --workers, at most `K` processes beyond N run during a roll: the new ones starting or\n"+
		"baking, and the old ones the roll drained until they exit. More is a faster roll and more memory.\n"+
		"Example: --max-surge 2")
	raw.maxMemory = fs.String("max-memory", "", "replace a worker whose resident memory passes `SIZE` (as 512M, 2G, 300MiB), a new one ready\n"+
		"first, with no request lost; checked every second. Example: --max-memory 512M")
	fs.StringVar(&cfg.Metrics, "metrics", "", "serve handoff's metrics on `HOST:PORT`/metrics in the Prometheus text format: reloads by\n"+
		"outcome, their duration, processes by state, drains, restarts, workers. An address of its own,\n"+
		"not a --listen socket. Example: --metrics 127.0.0.1:9101")
	fs.IntVar(&cfg.MaxDraining, "max-draining", DefaultMaxDraining, "at most this many old generations drain at once; past it the oldest is killed. Example: --max-draining 1")
	fs.BoolVar(&cfg.FDStore, "fdstore", false, "store the sockets in systemd's fd store, so that they stay open while handoff restarts\n(the unit needs FileDescriptorStoreMax=; on by itself where systemd sets $FDSTORE). Example: --fdstore")
	fs.BoolVar(&cfg.Handover, "handover", false, "move established connections to the new process instead of draining them, for programs that\n"+
		"adopt them (Go: package handover; Python: helpers/python): each process gets two channels,\n"+
		"HANDOFF_HANDOVER_FDS=IN,OUT, after its LISTEN_FDS sockets; when a process is replaced at its worker\n"+
		"index and its successor adopts, handoff relays the connections from one to the other before\n"+
		"the stop signal. Connections that do not move drain as before. Example: --handover")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "handoff's log lines on stderr: text (key=value) or json (one object per line, times in\nnanoseconds), for a log shipper. Example: --log-format json")
	fs.Var(tagOutputFlag{&cfg.TagOutput}, "tag-output", "tag each line the program's processes write to stdout and stderr with its generation, worker\n"+
		"index and pid: in text, after '[gen=3 worker=0 pid=1234] '; with --log-format json, as one object\n"+
		"a line, {\"time\",\"gen\",\"worker\",\"gen_pid\",\"stream\",\"line\"}; where systemd connected handoff's\n"+
		"output to the journal, as journal entries with HANDOFF_GENERATION=, HANDOFF_WORKER=, HANDOFF_PID=\n"+
		"(--tag-output=stream: on the stream even then). Off by default, and the output passes as the\n"+
		"program wrote it. Example: --tag-output")
	fs.StringVar(&cfg.Chdir, "chdir", "", "start each generation in `DIR`, resolved afresh (symlinks too) when it starts, so that a\n"+
		"flipped 'current' symlink takes effect on the next reload; a relative PROGRAM is found there.\n"+
		"Example: --chdir /srv/app/current")
	fs.StringVar(&cfg.EnvFile, "env-file", "", "read KEY=VALUE lines from `FILE` afresh for each generation; they override handoff's\n"+
		"environment (# comments, blank lines, '…' or \"…\" quotes). A bad file fails that reload and the old\n"+
		"generation serves on. Example: --env-file /srv/app/current/app.env")
	fs.Func("watch", "reload when what `PATH` holds changes; repeatable. A file (symlinks followed), or a directory\n"+
		"(the files directly in it, not those named .* or *~). Writes are debounced (200 ms quiet, 2 s at\n"+
		"most), so that a burst of them, an editor's save or the swap of a Kubernetes ConfigMap or Secret\n"+
		"volume is one reload; content left as it was (by sha256) is none. A path removed is watched for its\n"+
		"return; one missing at start must be in a directory that exists. A reload that fails leaves the\n"+
		"old generation serving, and the next change tries again. Example: --watch /etc/app/config.yaml", func(s string) error {
		raw.watches = append(raw.watches, s)
		return nil
	})
	fs.StringVar(&cfg.PIDFile, "pidfile", "", "write handoff's own pid to this `PATH`. Example: --pidfile /run/app/handoff.pid")
	fs.StringVar(&cfg.Control, "control", "", "control socket `PATH` for 'handoff reload' and 'handoff status' (default "+DefaultControl()+")")
	raw.userName = fs.String("user", "", "run the program as this `USER`, a name or a uid (handoff binds as root first). Example: --user www-data")
	raw.groupName = fs.String("group", "", "run the program with this `GROUP`, a name or a gid (default: the user's). Example: --group www-data")
	return fs, raw
}

// Parse parses the arguments of `handoff run`.
func Parse(args []string, stderr io.Writer) (*Config, error) {
	cfg := &Config{}
	fs, raw := runFlagSet(cfg)
	// The flag package prints the usage on every error; print it on --help
	// only, so that an error stays one line.
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, runUsage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, flag.ErrHelp
		}
		return nil, Usagef("handoff run: %v — see 'handoff run --help'", err)
	}
	if err := cfg.resolve(raw, fs.Args()); err != nil {
		return nil, err
	}
	return cfg, nil
}

// resolve checks the flags and the program line (rest), and fills in what
// they give: the program found in PATH, the sockets, the readiness and
// health probes, the stop signal, the control socket and the user.
func (cfg *Config) resolve(raw *runFlags, rest []string) error {
	if len(rest) == 0 {
		return Usagef("handoff run: no program given — put it after --, as in: handoff run --listen :8080 -- /usr/local/bin/app")
	}
	var err error
	if cfg.Chdir != "" {
		if fi, err := os.Stat(cfg.Chdir); err != nil || !fi.IsDir() {
			return Usagef("handoff run: --chdir %s: not a directory — give the directory the program runs in", cfg.Chdir)
		}
		if cfg.Chdir, err = filepath.Abs(cfg.Chdir); err != nil {
			return Usagef("handoff run: --chdir: %v", err)
		}
	}
	if cfg.EnvFile != "" {
		if cfg.EnvFile, err = filepath.Abs(cfg.EnvFile); err != nil {
			return Usagef("handoff run: --env-file: %v", err)
		}
		if _, err := envfile.Read(cfg.EnvFile); err != nil {
			return Usagef("handoff run: %v", err)
		}
	}
	prog, err := lookProgram(rest[0], cfg.Chdir)
	if err != nil {
		return err
	}
	cfg.Program, cfg.Args = prog, rest[1:]

	for i, s := range raw.listens {
		l, err := parseListen(s, i)
		if err != nil {
			return err
		}
		cfg.Listens = append(cfg.Listens, l)
	}
	seen := map[string]bool{}
	for _, l := range cfg.Listens {
		if seen[l.Addr.String()] {
			return Usagef("handoff run: --listen %s given twice", l.Addr)
		}
		seen[l.Addr.String()] = true
	}
	for _, w := range raw.watches {
		p, err := checkWatch(w)
		if err != nil {
			return err
		}
		for _, q := range cfg.Watch {
			if q == p {
				return Usagef("handoff run: --watch %s given twice", w)
			}
		}
		cfg.Watch = append(cfg.Watch, p)
	}
	if *raw.health != "" {
		if !strings.HasPrefix(*raw.health, "http://") && !strings.HasPrefix(*raw.health, "tcp://") {
			return Usagef("handoff run: --health %s: use http://HOST:PORT/PATH or tcp://HOST:PORT", *raw.health)
		}
		if cfg.Health, err = ParseReady(*raw.health); err != nil {
			return Usagef("handoff run: --health: %v", strings.TrimPrefix(err.Error(), "handoff run: --ready "))
		}
	}
	if *raw.maxMemory != "" {
		if cfg.MaxMemory, err = ParseSize(*raw.maxMemory); err != nil {
			return Usagef("handoff run: --max-memory %s: %v — give a size such as 512M, 2G or 300MiB", *raw.maxMemory, err)
		}
	}
	if cfg.Ready, err = ParseReady(*raw.ready); err != nil {
		return err
	}
	if cfg.StopSignal, err = ParseSignal(*raw.stop); err != nil {
		return err
	}
	switch {
	case cfg.ReadyTimeout <= 0:
		return Usagef("handoff run: --ready-timeout must be positive, as in --ready-timeout 30s")
	case cfg.DrainTimeout <= 0:
		return Usagef("handoff run: --drain-timeout must be positive, as in --drain-timeout 10s")
	case cfg.StopDelay < 0:
		return Usagef("handoff run: --stop-delay must not be negative")
	case cfg.Hold < 0:
		return Usagef("handoff run: --hold %v is negative — give a duration such as 10s, or 0 to close the sockets with handoff", cfg.Hold)
	case cfg.Bake < 0:
		return Usagef("handoff run: --bake must not be negative")
	case cfg.HungAfter < 0:
		return Usagef("handoff run: --hung-after must not be negative (0 turns the checks off), as in --hung-after 5s")
	case cfg.HungAfter > 0 && cfg.HungAfter < hungAfterMin:
		return Usagef("handoff run: --hung-after %v: give at least %v (or 0 to turn the checks off), as in --hung-after 5s", cfg.HungAfter, hungAfterMin)
	case cfg.Health.Kind != "" && cfg.Bake <= 0 && cfg.HungAfter <= 0:
		return Usagef("handoff run: --health is checked during --bake and while serving, and both are off — give --bake 10s, or a positive --hung-after")
	case cfg.MaxDraining < 1:
		return Usagef("handoff run: --max-draining must be at least 1")
	case cfg.Workers < 1 || cfg.Workers > maxWorkers:
		return Usagef("handoff run: --workers %d: give 1 to %d, as in --workers 4", cfg.Workers, maxWorkers)
	case cfg.Metrics != "" && !validHostPort(cfg.Metrics):
		return Usagef("handoff run: --metrics %s: give HOST:PORT, as in --metrics 127.0.0.1:9101", cfg.Metrics)
	case cfg.MaxSurge < 1:
		return Usagef("handoff run: --max-surge %d: give at least 1 (a roll starts a new worker before the old one drains), as in --max-surge 1", cfg.MaxSurge)
	case cfg.LogFormat != "text" && cfg.LogFormat != "json":
		return Usagef("handoff run: --log-format %q: use text or json", cfg.LogFormat)
	}
	if err := checkQUIC(cfg); err != nil {
		return err
	}
	if cfg.Control == "" {
		cfg.Control = DefaultControl()
	}
	if !filepath.IsAbs(cfg.Control) {
		// Relative to the directory handoff starts in, as the client
		// commands read theirs; the listener takes absolute paths.
		abs, err := filepath.Abs(cfg.Control)
		if err != nil {
			return Usagef("handoff run: --control %s: %v — give an absolute path", cfg.Control, err)
		}
		cfg.Control = abs
	}
	// sun_path holds 108 bytes, the last a NUL.
	if n := len(cfg.Control); n > 107 {
		return Usagef("handoff run: --control %s: %d bytes, longer than the 107 a Unix socket's path may have — give a shorter path", cfg.Control, n)
	}
	if n := len(cfg.HoldPath()); cfg.Hold > 0 && n > 107 {
		return Usagef("handoff run: --control %s: with --hold the keeper offers the sockets at %s, %d bytes, longer than the 107 a Unix socket's path may have — give a shorter path, or --hold 0", cfg.Control, cfg.HoldPath(), n)
	}
	if *raw.userName != "" || *raw.groupName != "" {
		if cfg.Credential, err = credential(*raw.userName, *raw.groupName); err != nil {
			return err
		}
	}
	return nil
}

// tagOutputFlag is --tag-output: a flag alone ("auto"), or with a value,
// --tag-output=stream or --tag-output=off.
type tagOutputFlag struct{ v *string }

func (f tagOutputFlag) IsBoolFlag() bool { return true }

func (f tagOutputFlag) String() string {
	if f.v == nil || *f.v == "" {
		return ""
	}
	return *f.v
}

func (f tagOutputFlag) Set(s string) error {
	switch s {
	case "true", "on", "auto":
		*f.v = "auto"
	case "stream":
		*f.v = "stream"
	case "false", "off":
		*f.v = ""
	default:
		return errors.New("give --tag-output alone, --tag-output=stream (never the journal's protocol) or --tag-output=off")
	}
	return nil
}

// checkWatch checks a --watch path and returns it absolute: a file or
// directory that exists, or a path missing in a directory that exists
// (watched for its coming).
func checkWatch(w string) (string, error) {
	if w == "" {
		return "", Usagef("handoff run: --watch needs a path, as in --watch /etc/app/config.yaml")
	}
	p, err := filepath.Abs(w)
	if err != nil {
		return "", Usagef("handoff run: --watch %s: %v", w, err)
	}
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
		return "", Usagef("handoff run: --watch %s: no such file, nor a directory %s to watch for it — give a file or directory that exists", w, filepath.Dir(p))
	}
	return p, nil
}

func parseListen(s string, i int) (Listen, error) {
	name, addr := "", s
	if k, v, ok := strings.Cut(s, "="); ok && !strings.Contains(k, ":") && !strings.Contains(k, "/") {
		name, addr = k, v
	}
	quic := strings.HasPrefix(addr, quicScheme)
	var a listener.Addr
	var err error
	if quic {
		a, err = parseQUIC(s, addr)
	} else if a, err = listener.Parse(addr); err != nil {
		err = Usagef("handoff run: --listen %s: %v", s, err)
	}
	if err != nil {
		return Listen{}, err
	}
	if name == "" {
		name = "listen" + strconv.Itoa(i)
		if a.Network == "systemd" {
			name = a.Address
		}
	}
	if err := systemd.CheckFDName(name); err != nil {
		return Listen{}, Usagef("handoff run: --listen %s: %v", s, strings.TrimPrefix(err.Error(), "systemd: "))
	}
	return Listen{Name: name, Addr: a, QUIC: quic}, nil
}

// lookProgram checks PROGRAM: a path (relative to dir, if given, where it is
// then left relative and found afresh at each start), or a name in PATH.
func lookProgram(p, dir string) (string, error) {
	if strings.Contains(p, "/") && dir != "" && !filepath.IsAbs(p) {
		fi, err := os.Stat(filepath.Join(dir, p))
		switch {
		case err != nil:
			return "", Usagef("handoff run: program %s in --chdir %s: %v — give the path of an executable", p, dir, errors.Unwrap(err))
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			return "", Usagef("handoff run: program %s in --chdir %s is not executable — chmod +x it", p, dir)
		}
		return p, nil
	}
	if strings.Contains(p, "/") {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			return "", Usagef("handoff run: program %s: %v — give the path of an executable", p, errors.Unwrap(err))
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			return "", Usagef("handoff run: program %s is not executable — chmod +x it", p)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", Usagef("handoff run: program %s: %v", p, err)
		}
		return abs, nil
	}
	path, err := exec.LookPath(p)
	if err != nil {
		return "", Usagef("handoff run: program %q not found in PATH — give its full path", p)
	}
	return path, nil
}

func credential(userName, groupName string) (*syscall.Credential, error) {
	var uid, gid uint64
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			u, err = user.LookupId(userName)
		}
		switch n, nerr := strconv.ParseUint(userName, 10, 32); {
		case err == nil:
			uid, _ = strconv.ParseUint(u.Uid, 10, 32)
			gid, _ = strconv.ParseUint(u.Gid, 10, 32)
		case nerr == nil:
			// A uid with no entry here (NSS-only, or a container's): its
			// group is the same number unless --group says otherwise.
			uid, gid = n, n
		default:
			return nil, Usagef("handoff run: --user %s: no such user — create it, choose another, or give a uid", userName)
		}
	} else {
		uid = uint64(os.Getuid())
		gid = uint64(os.Getgid())
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			g, err = user.LookupGroupId(groupName)
		}
		switch n, nerr := strconv.ParseUint(groupName, 10, 32); {
		case err == nil:
			gid, _ = strconv.ParseUint(g.Gid, 10, 32)
		case nerr == nil:
			gid = n
		default:
			return nil, Usagef("handoff run: --group %s: no such group — create it, choose another, or give a gid", groupName)
		}
	}
	if os.Getuid() != 0 && (uid != uint64(os.Getuid()) || gid != uint64(os.Getgid())) {
		return nil, Usagef("handoff run: --user/--group need handoff to run as root")
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// DefaultControl is the control socket path used when --control is not
// given: control.sock in $RUNTIME_DIRECTORY (set by systemd's
// RuntimeDirectory=), else /run/handoff/control.sock as root, else in
// $XDG_RUNTIME_DIR or the temporary directory.
func DefaultControl() string {
	if rd := os.Getenv("RUNTIME_DIRECTORY"); rd != "" {
		first, _, _ := strings.Cut(rd, ":")
		return filepath.Join(first, "control.sock")
	}
	if os.Getuid() == 0 {
		return "/run/handoff/control.sock"
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		return filepath.Join(x, "handoff", "control.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("handoff-%d", os.Getuid()), "control.sock")
}

// ParseSize parses a size in bytes: a number with an optional unit, K, M,
// G or T (powers of 1024, as ps and top count memory), with or without
// "iB" or "B".
func ParseSize(s string) (int64, error) {
	num := strings.TrimRight(s, "KMGTkmgtiBb")
	unit := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s[len(num):]), "B"), "I")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n <= 0 {
		return 0, errors.New("not a finite positive size")
	}
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q", s[len(num):])
	}
	switch b := n * mult; {
	case b < 1<<20:
		return 0, errors.New("less than 1 MiB, which no program runs in")
	case b >= 1<<60:
		return 0, errors.New("more than 1 EiB, which no machine has")
	}
	return int64(n * mult), nil
}

// validHostPort reports whether s is HOST:PORT with a numeric port.
func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}
