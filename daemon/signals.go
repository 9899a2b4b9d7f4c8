//go:build linux

package daemon

import (
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Signal names, for every command that takes or prints one.

// signalByName returns the signal named s — USR1, SIGUSR1, usr1 — and
// whether there is one.
func signalByName(s string) (syscall.Signal, bool) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	return sig, sig != 0
}

// signalName names sig as log records and messages do: SIGTERM.
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return sig.String()
}

// stopSignals are those --stop-signal takes: the ones programs drain on.
var stopSignals = []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGWINCH}

// parseSignal parses --stop-signal.
func parseSignal(s string) (syscall.Signal, error) {
	if sig, ok := signalByName(s); ok {
		for _, x := range stopSignals {
			if x == sig {
				return sig, nil
			}
		}
	}
	return 0, usagef("handoff run: --stop-signal %s: unknown signal — use TERM, INT, QUIT, USR1, USR2, HUP or WINCH", s)
}

// signalArg parses the signal of 'handoff signal': USR1, SIGUSR1 or 10.
func signalArg(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 64 {
		return syscall.Signal(n), nil
	}
	if sig, ok := signalByName(s); ok {
		return sig, nil
	}
	return 0, usagef("handoff signal: %s: unknown signal — use a name such as USR1 or a number", s)
}
