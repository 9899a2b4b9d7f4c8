//go:build linux

package daemon

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/keeper"
	"github.com/handoff-dev/handoff/daemon/internal/launch"
	"github.com/handoff-dev/handoff/daemon/internal/logs"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
	"github.com/handoff-dev/handoff/daemon/internal/release"
	"github.com/handoff-dev/handoff/daemon/internal/supervisor"
)

// ExitStopCut is handoff run's exit status after a stop that had to kill a
// generation — a second stop signal, or one still draining at
// --drain-timeout — where a clean stop exits 0.
const ExitStopCut = machine.ExitStopCut

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
	code, err := supervisor.Run(cfg, log, version())
	if err != nil {
		return exitFor(err, stderr)
	}
	return code
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
	var r gen.ReloadResult
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
	if h := st.Handover; h != nil {
		fmt.Fprintf(stdout, "connections handed over: %d, refused: %d, fallen back to drain: %d\n", h["handed_over"], h["refused"], h["fallback"])
	}
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
	fmt.Fprintln(tw, "GEN\tPID\tSTATE\tAGE\tRELEASE\tDIR")
	for _, g := range st.Generations {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", g.Generation, g.PID, g.State, time.Duration(g.AgeSeconds*float64(time.Second)).Round(time.Second), releaseColumn(g.Release), g.Dir)
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

// releaseColumn names a release in `handoff status`'s table: the first 12
// hex digits of its SHA-256 and its file — the script where an interpreter
// runs one — or "-" before handoff has read it.
func releaseColumn(id *release.Identity) string {
	if id == nil {
		return "-"
	}
	path := id.Program.Path
	if id.Script != nil {
		path = id.Script.Path
	}
	return id.Short() + " " + path
}
