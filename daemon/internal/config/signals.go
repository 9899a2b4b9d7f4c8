//go:build linux

package config

import (
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Signal names, for every command that takes or prints one.

// SignalByName returns the signal named s — USR1, SIGUSR1, usr1 — and
// whether there is one.
func SignalByName(s string) (syscall.Signal, bool) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	return sig, sig != 0
}

// SignalName names sig as log records and messages do: SIGTERM.
func SignalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return sig.String()
}

// stopSignals are those --stop-signal takes: the ones programs drain on.
var stopSignals = []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGWINCH}

// ParseSignal parses --stop-signal.
func ParseSignal(s string) (syscall.Signal, error) {
	if sig, ok := SignalByName(s); ok {
		for _, x := range stopSignals {
			if x == sig {
				return sig, nil
			}
		}
	}
	return 0, Usagef("handoff run: --stop-signal %s: unknown signal — use TERM, INT, QUIT, USR1, USR2, HUP or WINCH", s)
}

// SignalArg parses the signal of 'handoff signal': USR1, SIGUSR1 or 10.
func SignalArg(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 64 {
		return syscall.Signal(n), nil
	}
	if sig, ok := SignalByName(s); ok {
		return sig, nil
	}
	return 0, Usagef("handoff signal: %s: unknown signal — use a name such as USR1 or a number", s)
}
