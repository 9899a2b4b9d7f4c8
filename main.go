// Command handoff gives any program that accepts systemd's socket activation
// zero-downtime restarts: it holds the listening sockets and runs the program
// as successive generations. See 'handoff --help' and the daemon package.
package main

import (
	"os"

	"github.com/handoff-dev/handoff/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], os.Stdout, os.Stderr))
}
