package upgrader

import (
	"errors"
	"os"
)

// ErrPID1 is why a process that is PID 1 — a container's entrypoint — does
// not upgrade: the old generation exits after the handover, and PID 1's exit
// ends the container with every process in it.
var ErrPID1 = errors.New("upgrader: this process is PID 1 (a container's entrypoint), and its exit after a handover would end the container — " +
	"roll out a new container instead, or run the program under `handoff run` as the entrypoint; SIGTERM still drains")

// canUpgrade returns nil where this generation can upgrade, else why not.
func (u *Upgrader) canUpgrade() error {
	if err := u.core.CanUpgrade(); err != nil {
		return err
	}
	if os.Getpid() == 1 {
		return ErrPID1
	}
	return nil
}
