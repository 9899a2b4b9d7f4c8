//go:build !linux

package daemon

import (
	"fmt"
	"io"
	"runtime"
)

// Main is `handoff`'s command line. The daemon holds sockets for programs
// through Linux's process and socket interfaces (sock_diag, /proc, child
// subreapers, socket filters): elsewhere it says so and exits 1.
func Main(_ []string, _, stderr io.Writer) int {
	fmt.Fprintf(stderr, "handoff: the daemon runs on Linux only, not %s — the Go library (package upgrader) works here\n", runtime.GOOS)
	return 1
}
