//go:build linux

package upgrader

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// earlyModeEnv, in the environment of this test binary run again, names
// what TestEarlyHelper does in it.
const earlyModeEnv = "HANDOFF_EARLY_TEST"

// TestEarlySIGPIPE runs this test binary again, with and without tableflip's
// variable, and in it writes to a stdout whose reader is gone: Go ends a
// process with SIGPIPE for that unless SIGPIPE is caught. A new generation
// that takes the early channel must survive (adopt relies on it while fd 2
// is the parent's pipe), also after a signal.Reset; one that releases it,
// and a process without the variable, must not.
func TestEarlySIGPIPE(t *testing.T) {
	for _, tc := range []struct {
		mode     string
		sentinel bool
		survives bool
	}{
		{"take", true, true},
		{"reset-take", true, true},
		{"release", true, false},
		{"none", false, false}, // the control: the write does end it
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.short", "-test.run=^TestEarlyHelper$")
			cmd.Env = append(os.Environ(), earlyModeEnv+"="+tc.mode)
			if tc.sentinel {
				cmd.Env = append(cmd.Env, tableflipSentinel+"=yes")
			}
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGPIPE
			switch {
			case tc.survives && (err != nil || !strings.Contains(string(out), "survived")):
				t.Fatalf("it did not survive a write to a broken stdout: %v\n%s", err, out)
			case !tc.survives && !killed:
				t.Fatalf("SIGPIPE did not end it (%v): SIGPIPE is still caught\n%s", err, out)
			}
		})
	}
}

// TestEarlyHelper is TestEarlySIGPIPE's process, run again.
func TestEarlyHelper(t *testing.T) {
	mode := os.Getenv(earlyModeEnv)
	if mode == "" {
		t.Skip("run by TestEarlySIGPIPE")
	}
	if (early != nil) != (os.Getenv(tableflipSentinel) != "") {
		t.Fatalf("early is %v with %s=%q", early, tableflipSentinel, os.Getenv(tableflipSentinel))
	}
	switch mode {
	case "take":
		early.takePipeSignal()
	case "reset-take":
		<-early.done
		signal.Reset(syscall.SIGPIPE)
		early.takePipeSignal()
	case "release":
		early.release()
	}
	// stdout: a pipe nobody reads any more.
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	syscall.Close(p[0])
	if err := unix.Dup2(p[1], 1); err != nil {
		t.Fatal(err)
	}
	// release stops catching in the background: write until that is done.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, err := os.Stdout.Write([]byte("x"))
		if !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("write to a broken stdout: %v, want EPIPE", err)
		}
		if mode != "release" {
			break
		}
		time.Sleep(time.Millisecond)
	}
	os.Stderr.WriteString("survived\n")
}
