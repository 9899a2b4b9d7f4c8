package daemon

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// ShimCommand is the hidden first argument with which handoff re-executes
// itself between fork and the program's exec: LISTEN_PID (and WATCHDOG_PID)
// must hold the pid of the process that reads it, which only the child
// itself knows.
const ShimCommand = "__handoff_shim"

var execLookPath = exec.LookPath

// Shim sets LISTEN_PID, and WATCHDOG_PID when WATCHDOG_USEC is set, to its
// own pid and replaces itself with args[0],
// which it runs with args[1:]. It returns only on failure, with the exit
// status to use (127, as a shell does for a program it cannot run).
func Shim(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "handoff: shim: no program")
		return 127
	}
	pid := strconv.Itoa(os.Getpid())
	if err := os.Setenv("LISTEN_PID", pid); err != nil {
		fmt.Fprintln(stderr, "handoff: shim:", err)
		return 127
	}
	if os.Getenv("WATCHDOG_USEC") != "" {
		_ = os.Setenv("WATCHDOG_PID", pid)
	}
	err := syscall.Exec(args[0], args, os.Environ())
	fmt.Fprintf(stderr, "handoff: cannot run %s: %v — check that it exists and is executable by this user\n", args[0], err)
	return 127
}
