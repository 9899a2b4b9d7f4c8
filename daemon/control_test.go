//go:build linux

package daemon_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestControlSurvivesFDExhaustion fills handoff's fd table with idle control
// connections: accept fails with EMFILE meanwhile, which is logged once, and
// once they close the control socket answers again.
func TestControlSurvivesFDExhaustion(t *testing.T) {
	alongside(t)
	d := startDaemon(t, nil)
	pid := d.cmd.Process.Pid
	limit := uint64(proc.FDCount(pid) + 16)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 40 {
		c, err := net.Dial("unix", d.control)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	d.waitRecord(10*time.Second, "event=control.accept_failed", "err~too many open files")
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if got := d.status(); len(got.Generations) != 1 || got.Generations[0].State != "ready" {
		t.Fatalf("status after the episode: %+v", got)
	}
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload after the episode: exit %d: %s", code, out)
	}
	// The end of the episode is logged at the first accept a second after
	// its last error: ask until it is.
	deadline := time.Now().Add(10 * time.Second)
	for logrec.Find(d.records(), "event=control.accepting") == nil && time.Now().Before(deadline) {
		d.status()
		time.Sleep(100 * time.Millisecond)
	}
	// Once per episode: a failure record, then a recovery record.
	failed := logrec.Count(d.records(), "event=control.accept_failed")
	recovered := logrec.Count(d.records(), "event=control.accepting")
	if failed != 1 || recovered != 1 {
		t.Errorf("%d accept-failure records and %d recoveries: want one of each for the one episode", failed, recovered)
	}
}

// TestControlClientBounds: a client that sends an oversized request gets a
// one-line refusal, not handoff's memory; 'handoff reload' and 'status' give
// up on a control socket that accepts nothing, within their bounds, saying so.
func TestControlClientBounds(t *testing.T) {
	alongside(t)
	d := startDaemon(t, nil)
	c, err := net.Dial("unix", d.control)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		junk := []byte(`{"cmd":"` + strings.Repeat("x", 1<<16))
		for range 1 << 10 {
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 512)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := c.Read(buf)
	c.Close()
	if !strings.Contains(string(buf[:n]), "bad request: not one JSON object of at most") {
		t.Errorf("oversized request answered %q", buf[:n])
	}

	// Without --timeout, 'handoff reload' waits as long as the daemon says a
	// reload can take.
	if st := d.status(); st.ReloadBound < 60 {
		t.Errorf("status reports a reload bound of %v s, want --ready-timeout's 60 s and more", st.ReloadBound)
	}

	// A socket that listens but accepts nothing, as a stuck handoff's does.
	stuck := d.dir + "/stuck.sock"
	ln, err := net.Listen("unix", stuck)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, args := range [][]string{{"status", "--timeout", "1s"}, {"reload", "--timeout", "1s"}} {
		cmd := exec.Command(handoffBin, append(args, "--control", stuck)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("%v on a stuck socket: %v: %s", args, err, out)
		}
		if !strings.Contains(string(out), "no answer within") {
			t.Errorf("%v on a stuck socket said %q", args, out)
		}
	}
}
