//go:build !linux

package daemon

import "os/exec"

// launch starts the program through handoff's shim, which sets LISTEN_PID
// (and WATCHDOG_PID) to its own pid before it execs the program.
func launch(spec launchSpec) (*exec.Cmd, string, error) {
	cmd, err := startShim(spec)
	return cmd, "shim", err
}
