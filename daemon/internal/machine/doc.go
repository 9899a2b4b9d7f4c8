// Package machine is the state of `handoff run`: the program's processes,
// the reload under way and the one queued, the restart backoff and the
// stop. Its one transition function, Machine.Step, takes an event (package
// gen's Ev* types) and returns the actions to carry out (gen's Act* types),
// and it changes the processes' gen.Gen as they go; it does no
// I/O — it imports nothing that reaches the system (TestPure) — so that its
// tests drive it in memory. The supervisor's goroutine alone steps it, turns
// what happens into events and carries the actions out, and never steps it
// while carrying out the actions of a step.
//
// # Generations
//
// Each run of the program is a generation, numbered from 1: one process, or
// with --workers N, N processes (workers, indexed from 0) that share the
// sockets. A process's states (State), which only Step changes, are:
//
//	starting  started with the sockets; waiting for readiness (--ready).
//	          Ready → baking (if --bake) or ready. Exits, or not ready
//	          within --ready-timeout → killed, failed (final).
//	baking    ready, while the previous generation still serves for --bake.
//	          → ready when the window ends; exits, or is shown not to
//	          serve (EvBakeFailed: takes no connection, answers nothing,
//	          fails --health) → rolled back: drained, and failed (final).
//	ready     the current generation, serving. → draining when a newer one
//	          takes over or on stop; exits on its own, or hangs (no
//	          WATCHDOG=1 for WatchdogSec= after it once sent one) → exited
//	          (final), and a new generation is started after a backoff.
//	          Shown hung by the liveness checks (EvUnresponsive: answers
//	          nothing, takes no connection, fails --health) → paused, shown
//	          as "unresponsive", until a new process takes its worker
//	          index → draining.
//	draining  sent --stop-signal; SIGKILL after --drain-timeout, or at once
//	          when more than --max-draining generations drain. → exited.
//	exited    final.
//
// `handoff status` shows these names.
//
// A reload (SIGHUP, `handoff reload`, a change --watch saw) starts
// generation N+1; generation N keeps serving until N+1 is ready and its
// bake window has passed. With several workers the reload rolls (roll): one worker index after another,
// each new process ready before the old one drains, at most --max-surge
// processes beyond the workers' number; a new process that fails stops the
// roll, and the workers already replaced are put back to what they ran. A
// worker that exits on its own is restarted alone, with its own backoff;
// one past --max-memory, or shown hung, is replaced by a roll of its index
// alone. A reload asked while one runs is queued — several make one — and
// carried out after, so that a program replaced meanwhile is always picked
// up. This is the library's rule too (package upgrader): an upgrade asked
// before the new process has started joins it, one asked after is queued.
// (handoff starts the process as soon as the reload is asked, so here every
// reload asked during another is queued.)
//
// The whole service's mode is its phase, which only moves forward:
// starting (the first generation is not ready yet) → serving → closing (a
// stop holds new connections back while the generations take the queued
// ones) → stopping (every generation drains; handoff exits once none is
// left). A stop may come in any phase.
package machine
