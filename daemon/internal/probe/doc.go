// Package probe tells whether a process serves, from outside it: readiness
// by --ready (an HTTP or TCP probe, a delay, or the process seen waiting in
// accept on every socket), the bake window's checks of a new process beside
// the serving one (Bake), and the liveness checks of the serving ones
// (WatchLive) — from the kernel's view of their connections (sock_diag,
// /proc) and the health check. It says what it saw; the machine decides.
// The one thing it does to a process: the bake's probe pauses the processes
// serving beside a new one (SIGSTOP, at most 0.5 s, then SIGCONT), so that
// the new one alone can take connections.
package probe
