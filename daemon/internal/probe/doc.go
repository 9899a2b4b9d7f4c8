// Package probe tells whether a process serves, from outside it: readiness
// by --ready (an HTTP or TCP probe, a delay, or the process seen waiting in
// accept on every socket), the bake window's checks of a new process beside
// the serving one (Bake), and the liveness checks of the serving ones
// (WatchLive) — from the kernel's view of their connections (sock_diag,
// /proc) and the health check. It says what it saw; the machine decides.
package probe
