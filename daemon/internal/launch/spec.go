//go:build linux

package launch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Spec is what a generation is started with. Env holds neither
// LISTEN_PID nor WATCHDOG_PID: launch adds them.
type Spec struct {
	Self       string   // the handoff binary, run as the shim
	Path       string   // the file to run
	Args       []string // its argument vector; Args[0] is the name it is given
	Dir        string
	Env        []string
	ExtraFiles []*os.File
	Stdout     io.Writer
	Stderr     io.Writer
	Attr       syscall.SysProcAttr
	Watchdog   bool
}

// command returns an unstarted command that runs path with args and
// everything else of s.
func (s Spec) command(path string, args []string) *exec.Cmd {
	attr := s.Attr
	cmd := &exec.Cmd{Path: path, Args: args, Dir: s.Dir, Env: append([]string(nil), s.Env...),
		ExtraFiles: s.ExtraFiles, Stdout: s.Stdout, Stderr: s.Stderr, SysProcAttr: &attr}
	return cmd
}

// startShim starts handoff's shim (see Shim), which execs the program.
func startShim(s Spec) (*exec.Cmd, error) {
	cmd := s.command(s.Self, append([]string{filepath.Base(s.Args[0]), ShimCommand, s.Path}, s.Args...))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// DescribeExit says how a process ended, given what its Wait returned:
// "exit status N", "killed by signal SIGNAME", or the error itself.
func DescribeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + unix.SignalName(ws.Signal())
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exit status 0"
}
