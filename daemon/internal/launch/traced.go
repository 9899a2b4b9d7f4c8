//go:build linux

package launch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// A program reads LISTEN_PID (and WATCHDOG_PID) and uses the sockets only if
// it holds its own pid, which nobody knows before the fork. Two ways to put
// it there, the first preferred:
//
//   - traced: the program is started directly with PTRACE_TRACEME, so that
//     the kernel stops it right after its exec, before it runs one
//     instruction. handoff then writes the pid into the placeholder value of
//     LISTEN_PID in the new process's environment (the strings at the top of
//     its stack, through /proc/PID/mem), ends the string there and detaches.
//     It costs two system calls and a context switch.
//   - the shim: handoff re-executes itself, sets the variables to its own pid
//     and execs the program. It costs a second exec and a Go runtime start
//     (10 ms on a slow machine, more than the program's own start).
//
// Tracing is not used where the kernel or a sandbox forbids it (Yama
// ptrace_scope 3, a seccomp profile, handoff itself being traced), nor for a
// program that gains privileges at exec (setuid, setgid, file capabilities):
// under a tracer without CAP_SYS_PTRACE the kernel would run it without them.

// pidPlaceholder is the value LISTEN_PID and WATCHDOG_PID hold until the
// launcher writes the pid over it: wider than any pid (at most 4194304).
const pidPlaceholder = "??????????"

// noTrace is set once tracing was refused: later generations go through the
// shim at once.
var noTrace atomic.Bool

// Start starts the program of spec so that it finds its own pid in
// LISTEN_PID, and in WATCHDOG_PID when spec.Watchdog is set. It returns the
// started command and how the pid was passed: "traced" or "shim".
func Start(spec Spec) (*exec.Cmd, string, error) {
	if !noTrace.Load() && !gainsPrivileges(spec.Path) {
		cmd := spec.command(spec.Path, spec.Args)
		err := startTraced(cmd, spec.Watchdog)
		if err == nil {
			return cmd, "traced", nil
		}
		if !errors.Is(err, errNoTrace) {
			return nil, "", err
		}
		// Perhaps the shim can: if so, tracing was the trouble.
		shim, serr := startShim(spec)
		if serr != nil {
			return nil, "", serr
		}
		noTrace.Store(true)
		return shim, "shim", nil
	}
	cmd, err := startShim(spec)
	return cmd, "shim", err
}

// errNoTrace says that the traced start is not possible here.
var errNoTrace = errors.New("tracing the program at exec is not allowed here")

// gainsPrivileges reports whether exec of path may raise privileges (setuid,
// setgid or file capabilities), which a tracer would cancel.
func gainsPrivileges(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false // exec reports it
	}
	if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		return true
	}
	n, err := unix.Getxattr(path, "security.capability", nil)
	return err == nil && n > 0
}

// startTraced starts cmd under PTRACE_TRACEME, writes its pid into the
// environment at its exec stop and detaches. It returns an error wrapping
// errNoTrace, with no process left behind, when tracing is refused.
func startTraced(cmd *exec.Cmd, watchdog bool) error {
	cmd.Env = append(cmd.Env, "LISTEN_PID="+pidPlaceholder)
	if watchdog {
		cmd.Env = append(cmd.Env, "WATCHDOG_PID="+pidPlaceholder)
	}
	cmd.SysProcAttr.Ptrace = true

	// Every ptrace request must come from the thread that is the tracer:
	// the one that forked.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) {
			// PTRACE_TRACEME refused (or a credential; the shim will say):
			// the program never ran.
			return fmt.Errorf("%w: %v", errNoTrace, err)
		}
		return err
	}
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, unix.WALL, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("waiting for the exec of pid %d: %w", pid, os.NewSyscallError("wait4", err))
		}
		break
	}
	if !ws.Stopped() {
		// It cannot have exited before the exec stop; treat it as refused.
		// wait4 has reaped it: only the process handle is left to free.
		_ = cmd.Process.Release()
		return fmt.Errorf("%w: pid %d did not stop at exec (%v)", errNoTrace, pid, ws)
	}
	err := writePid(pid, watchdog)
	if err != nil {
		_ = cmd.Process.Kill()
	}
	// Detach with no signal: the SIGTRAP of the exec is not delivered.
	if derr := syscall.PtraceDetach(pid); derr != nil && err == nil {
		_ = cmd.Process.Kill()
		err = os.NewSyscallError("ptrace(PTRACE_DETACH)", derr)
	}
	if err != nil {
		// Killed before it ran an instruction: reap it here (the caller
		// gets no command), and let the shim start the program instead,
		// now and for later generations.
		_ = cmd.Wait()
		return fmt.Errorf("%w: pid %d: writing LISTEN_PID: %v", errNoTrace, pid, err)
	}
	return nil
}

// writePid writes pid over the placeholders of the stopped process's
// environment and ends each value after it.
func writePid(pid int, watchdog bool) error {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err
	}
	envStart, err := statField(stat, 50)
	if err != nil {
		return err
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer mem.Close()
	value := append([]byte(strconv.Itoa(pid)), 0)
	keys := []string{"LISTEN_PID="}
	if watchdog {
		keys = append(keys, "WATCHDOG_PID=")
	}
	for _, key := range keys {
		// Search from a NUL put before the first entry: off is then where
		// the entry starts in environ.
		off := bytes.Index(append([]byte{0}, environ...), []byte("\x00"+key+pidPlaceholder+"\x00"))
		if off < 0 {
			return fmt.Errorf("%s not found in the new process's environment", key)
		}
		at := int64(envStart) + int64(off+len(key))
		if _, err := mem.WriteAt(value, at); err != nil {
			return err
		}
	}
	return nil
}

// statField returns field n (1-based, as in proc(5)) of /proc/PID/stat.
func statField(stat []byte, n int) (uint64, error) {
	// The command name (field 2) may hold spaces: count from its ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if n-3 >= len(f) {
		return 0, fmt.Errorf("/proc/PID/stat has no field %d (kernel older than 3.5?)", n)
	}
	return strconv.ParseUint(f[n-3], 10, 64)
}
