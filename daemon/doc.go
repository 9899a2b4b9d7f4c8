// Package daemon is `handoff run`: it holds the listening sockets and runs a
// program, in any language, as successive generations, handing the sockets
// to each through the systemd socket-activation protocol (LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID), so that a program that supports socket
// activation gets zero-downtime restarts unchanged.
//
// # Generations
//
// Each run of the program is a generation, numbered from 1: one process, or
// with --workers N, N processes (workers, indexed from 0) that share the
// sockets. A process's states, which
// only the supervisor's goroutine changes — through machine.step (machine.go),
// one transition function from events to actions, tested against this table
// in-process — are:
//
//	starting  started with the sockets; waiting for readiness (--ready).
//	          Ready → baking (if --bake) or ready. Exits, or not ready
//	          within --ready-timeout → killed, failed (final).
//	baking    ready, while the previous generation still serves for --bake.
//	          → ready when the window ends; exits, or is shown not to
//	          serve (bake.go: takes no connection, answers nothing, fails
//	          --health) → rolled back: drained, and failed (final).
//	ready     the current generation, serving. → draining when a newer one
//	          takes over or on stop; exits on its own, or hangs (no
//	          WATCHDOG=1 for WatchdogSec= after it once sent one) → exited
//	          (final), and a new generation is started after a backoff.
//	          Shown hung by the liveness checks (liveness.go: answers
//	          nothing, takes no connection, fails --health) → paused, shown
//	          as "unresponsive", until a new process takes its worker
//	          index → draining.
//	draining  sent --stop-signal; SIGKILL after --drain-timeout, or at once
//	          when more than --max-draining generations drain. → exited.
//	exited    final.
//
// `handoff status` shows these names.
//
// A reload (SIGHUP, `handoff reload`) starts generation N+1; generation N
// keeps serving until N+1 is ready and its bake window has passed. With
// several workers the reload rolls (machine.go, roll): one worker index
// after another, each new process ready before the old one drains, at most
// --max-surge processes beyond the workers' number; a new process that fails
// stops the roll, and the workers already replaced are put back to what they
// ran. A worker that exits on its own is restarted alone, with its own
// backoff; one past --max-memory, or shown hung, is replaced by a roll of
// its index alone. A reload
// asked while one runs is queued — several make one — and carried out after,
// so that a program replaced meanwhile is always picked up. This is the
// library's rule too (package upgrader): an upgrade asked before the new
// process has started joins it, one asked after is queued. (handoff starts
// the process as soon as the reload is asked, so here every reload asked
// during another is queued.)
//
// # Stops, strays and handoff's own death
//
// A stop sends every generation its stop signal, then closes handoff's own
// copies of the sockets (release_linux.go): a socket stops listening when
// the last generation closes it, so a connection that comes after is
// refused, never accepted by the kernel only to be reset when handoff exits.
//
// handoff is a child subreaper (reaper_linux.go): what a generation leaves
// behind — a program that daemonized, a helper whose parent died — becomes
// handoff's child, and is stopped like a draining generation when that
// generation exits (strays.go); a generation that exits 0 before it is ready
// and leaves processes behind failed because it daemonized, and says so.
//
// If handoff is killed, each generation gets its stop signal as its
// parent-death signal and drains; its output reaches handoff's stdout and
// stderr through the keeper, which holds the pipes (keeper.go). The keeper
// holds the listening sockets too: for --hold after handoff's death new
// connections wait in the accept queue, and a handoff started again with
// the same --control takes the sockets from it (hold.go) and serves them;
// with no taker, the keeper closes them when the hold ends, and clients are
// refused. handoff restarts a keeper that dies, at once, and hands the new
// one the pipes and sockets (keeperlink.go); on a stop the keeper closes its
// copies first, so that a stop still refuses new connections.
//
// The supervisor's own pid never changes on a reload. SIGUSR2 upgrades
// handoff itself through the upgrader package: a new handoff process takes
// the sockets and starts its own generation; when it is ready, the old
// handoff stops its generations gracefully and exits.
package daemon
