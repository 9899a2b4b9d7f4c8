// Package launch starts a generation's program so that it finds its own pid
// in LISTEN_PID (and WATCHDOG_PID), as systemd's socket activation requires:
// traced at its exec where the kernel allows, else through handoff's shim
// (Shim), which handoff runs as a hidden command of its own binary.
package launch
