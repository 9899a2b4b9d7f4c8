//go:build !unix

package upgrader

import (
	"errors"
	"os"
	"syscall"
)

// newCore returns noHandoff: this system cannot pass descriptors to a child.
func newCore(opts Options) (core, error) { return newNoHandoff(opts.PIDFile), nil }

func newCtlPair() (*ctl, *os.File, error) { return nil, nil, errors.ErrUnsupported }

func dupOnto(*os.File, int) error { return errors.ErrUnsupported }

// kill ends pid (there is no other signal to send here).
func kill(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
