package systemd

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state, one or more newline-separated KEY=VALUE assignments, to
// the service manager in a single datagram. Results are as in the package
// documentation.
func Notify(state string) (bool, error) {
	ok, err := daemon.SdNotify(false, state)
	if err != nil {
		return false, fmt.Errorf("systemd: sd_notify %q: %w", firstLine(state), err)
	}
	return ok, nil
}

// Ready tells the service manager that start-up, or a reload, is complete.
// status, if not empty, is sent in the same datagram as STATUS=.
func Ready(status string) (bool, error) {
	return Notify(join("READY=1", status))
}

// Reloading tells the service manager that a reload has begun. It sends
// RELOADING=1 with MONOTONIC_USEC set to now on CLOCK_MONOTONIC, as
// Type=notify-reload units require; a READY=1 must follow when the reload has
// ended, whether or not it succeeded.
func Reloading(status string) (bool, error) {
	return Notify(join(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", MonotonicUsec()), status))
}

// ReadyMainPID tells the service manager, in one datagram, that pid is now
// the service's main process and that it is ready. Only the current main
// process may send it under NotifyAccess=main. Send a Barrier after it before
// the sender exits, so that systemd has processed it by then.
func ReadyMainPID(pid int, status string) (bool, error) {
	return Notify(join("MAINPID="+strconv.Itoa(pid)+"\nREADY=1", status))
}

// Status sets the free-form status line shown by systemctl status.
func Status(status string) (bool, error) {
	return Notify(join("", status))
}

// Stopping tells the service manager that the service is shutting down.
// Send it only on a real stop, never from a generation that hands over.
func Stopping(status string) (bool, error) {
	return Notify(join("STOPPING=1", status))
}

// ExtendTimeout asks the service manager for d more before the timeout of
// the current state (start, reload, stop) fails the service
// (EXTEND_TIMEOUT_USEC=): send it again before d has passed while the state
// lasts.
func ExtendTimeout(d time.Duration) (bool, error) {
	return Notify(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds()))
}

// Watchdog sends one keep-alive ping (WATCHDOG=1).
func Watchdog() (bool, error) {
	return Notify(daemon.SdNotifyWatchdog)
}

// join builds a state message from a fixed part and an optional status. A
// status is sanitised to one line, as STATUS= cannot hold a newline.
func join(fixed, status string) string {
	if status == "" {
		return fixed
	}
	status = "STATUS=" + strings.ReplaceAll(status, "\n", " ")
	if fixed == "" {
		return status
	}
	return fixed + "\n" + status
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
