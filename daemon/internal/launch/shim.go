//go:build linux

package launch

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
)

// ShimCommand is the hidden first argument with which handoff re-executes
// itself between fork and the program's exec: LISTEN_PID (and WATCHDOG_PID)
// must hold the pid of the process that reads it, which only the child
// itself knows.
const ShimCommand = "__handoff_shim"

// Shim sets LISTEN_PID, and WATCHDOG_PID when WATCHDOG_USEC is set, to its
// own pid and replaces itself with the program at args[0], which it runs with
// the argument vector args[1:] (args[1] is the program's name as configured:
// a multi-call binary such as busybox reads its applet from it, even when
// args[0] is the file a symlink leads to). It returns only on failure, with
// the exit status to use (127, as a shell does for a program it cannot run).
func Shim(args []string, stderr io.Writer) int {
	if len(args) < 2 {
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
	err := syscall.Exec(args[0], args[1:], os.Environ())
	fmt.Fprintf(stderr, "handoff: cannot run %s: %v — check that it exists and is executable by this user\n", args[1], err)
	return 127
}
