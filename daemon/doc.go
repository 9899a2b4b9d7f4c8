// Package daemon is `handoff run`: it holds the listening sockets and runs a
// program, in any language, as successive generations, handing the sockets
// to each through the systemd socket-activation protocol (LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID), so that a program that supports socket
// activation gets zero-downtime restarts unchanged.
//
// This package is the command line: `handoff run` (Main hands it to package
// supervisor) and the client commands. The parts, each a package under
// internal/ — ARCHITECTURE.md maps them:
//
//	config      the flags of `handoff run`, their defaults and checks
//	supervisor  the goroutine that steps the machine and carries out its actions
//	machine     the state: processes, reloads, rolls, stops (pure: no I/O)
//	probe       readiness, the bake window's and the liveness checks
//	control     the control socket's protocol: server and client
//	metrics     --metrics: the figures and their server
//	launch      starting a program with its own pid in LISTEN_PID
//	doors       holding new connections back for a stop
//	reaper      the child subreaper, and the strays it lists
//	keeper      what outlives a killed handoff: its output and sockets
//	procfs      what /proc says of a process
//	logs        the log handlers
//
// # Stops, strays and handoff's own death
//
// A stop sends every generation its stop signal, then closes handoff's own
// copies of the sockets (package doors): a socket stops listening when
// the last generation closes it, so a connection that comes after is
// refused, never accepted by the kernel only to be reset when handoff exits.
//
// handoff is a child subreaper (package reaper): what a generation leaves
// behind — a program that daemonized, a helper whose parent died — becomes
// handoff's child, and is stopped like a draining generation when that
// generation exits (supervisor); a generation that exits 0 before it is ready
// and leaves processes behind failed because it daemonized, and says so.
//
// If handoff is killed, each generation gets its stop signal as its
// parent-death signal and drains; its output reaches handoff's stdout and
// stderr through the keeper, which holds the pipes (package keeper). The keeper
// holds the listening sockets too: for --hold after handoff's death new
// connections wait in the accept queue, and a handoff started again with
// the same --control takes the sockets from it (keeper.TakeHeld) and serves them;
// with no taker, the keeper closes them when the hold ends, and clients are
// refused. handoff restarts a keeper that dies, at once, and hands the new
// one the pipes and sockets; on a stop the keeper closes its
// copies first, so that a stop still refuses new connections.
//
// The supervisor's own pid never changes on a reload. SIGUSR2 upgrades
// handoff itself through the upgrader package: a new handoff process takes
// the sockets and starts its own generation; when it is ready, the old
// handoff stops its generations gracefully and exits.
package daemon
