//go:build linux

package daemon_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// tagProgram prints, before it becomes examples/app (exec: the same pid),
// a line on stdout and one on stderr naming its worker and pid, a line of
// 100 000 bytes written at once by the shell (past a pipe's 64 KiB: read in
// pieces) and the start of a line without its newline, which the app's
// first line ends.
const tagProgram = `#!/bin/sh
echo "out worker=$HANDOFF_WORKER pid=$$"
echo "err worker=$HANDOFF_WORKER pid=$$" >&2
long=$(head -c 100000 /dev/zero | tr '\0' x)
echo "$long"
printf 'partial pid=%s ' $$
exec @APP@ "$@"
`

// TestTagOutput: with --tag-output and two workers, through a reload, every
// line the processes printed — the old generation's as it drains too —
// carries the generation, worker and pid of the process that printed it,
// as handoff's own records give them; the long line is one object; the last
// generation's last lines, printed as handoff stops, are not lost.
func TestTagOutput(t *testing.T) {
	alongside(t)
	prog := filepath.Join(t.TempDir(), "tagged.sh")
	proc.WriteExec(t, prog, []byte(strings.Replace(tagProgram, "@APP@", appBin, 1)))
	d := startDaemon(t, []string{prog}, "--tag-output", "--workers", "2")
	d.waitWorkers(2)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: exit %d: %s\n%s", code, out, d.log())
	}
	// The first generation's workers have exited, their last lines (the
	// app's "drained") read.
	deadline := time.Now().Add(30 * time.Second)
	for len(findAll(d.records(), "event=generation.exited", "gen=1")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("generation 1's two workers not exited after 30 s:\n%s", d.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.stop()

	type genOf struct{ gen, worker string }
	started := map[string]genOf{} // by pid, from handoff's records
	for _, r := range findAll(d.records(), "event=generation.started") {
		started[r.Get("gen_pid")] = genOf{r.Get("gen"), r.Get("worker")}
	}
	if len(started) != 4 {
		t.Fatalf("%d processes started, want 4 (2 generations of 2 workers):\n%s", len(started), d.log())
	}
	pidRe, workerRe := regexp.MustCompile(`pid=(\d+)`), regexp.MustCompile(`worker=(\d+)`)
	seen := map[string]int{} // kind of line and pid: how many
	for _, r := range d.records() {
		if _, ok := r["line"]; !ok {
			continue // handoff's own
		}
		pid, line, stream := r.Get("gen_pid"), r.Get("line"), r.Get("stream")
		p, ok := started[pid]
		switch {
		case !ok:
			t.Errorf("a line of pid %s, which handoff did not start: %v", pid, r)
			continue
		case r.Get("gen") != p.gen || r.Get("worker") != p.worker:
			t.Errorf("a line of pid %s tagged gen %s worker %s; handoff started it as gen %s worker %s: %v", pid, r.Get("gen"), r.Get("worker"), p.gen, p.worker, r)
		}
		if m := pidRe.FindStringSubmatch(line); m != nil && m[1] != pid {
			t.Errorf("line %q of pid %s tagged gen_pid %s", line, m[1], pid)
		}
		if m := workerRe.FindStringSubmatch(line); m != nil && m[1] != p.worker {
			t.Errorf("line %q of worker %s tagged worker %s", line, m[1], p.worker)
		}
		kind := ""
		switch {
		case strings.HasPrefix(line, "out worker=") && stream == "stdout":
			kind = "out"
		case strings.HasPrefix(line, "err worker=") && stream == "stderr":
			kind = "err"
		case line == strings.Repeat("x", 100000):
			kind = "long"
		case strings.Contains(line, "drained") && stream == "stdout":
			kind = "drained"
		case strings.HasPrefix(line, "partial pid="):
			kind = "partial"
		}
		seen[kind+" "+pid]++
	}
	for pid, p := range started {
		for _, kind := range []string{"out", "err", "long", "partial"} {
			if seen[kind+" "+pid] != 1 {
				t.Errorf("%d %s lines of pid %s (gen %s worker %s), want 1", seen[kind+" "+pid], kind, pid, p.gen, p.worker)
			}
		}
		// Generation 2 drains at handoff's stop: its last lines too reach
		// handoff's output before handoff exits.
		if seen["drained "+pid] != 1 {
			t.Errorf("%d drained lines of pid %s (gen %s), want 1", seen["drained "+pid], pid, p.gen)
		}
	}
	if t.Failed() {
		t.Logf("lines by kind and pid: %v\n%s", seen, tail(d.log(), 4000))
	}
}

// tail returns the last n bytes of s, at most, from a line's start.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// findAll returns the records that match terms (see logrec.Record.Match).
func findAll(recs []logrec.Record, terms ...string) []logrec.Record {
	var out []logrec.Record
	for _, r := range recs {
		if r.Match(terms...) {
			out = append(out, r)
		}
	}
	return out
}

// TestTagOutputJournal: where handoff's stdout and stderr are the journal's
// stream ($JOURNAL_STREAM names them), the lines go to journald's socket as
// entries of its native protocol, with the tags as fields, and none to the
// stream. journald is a socket the test binds, mounted at its path in a
// mount namespace of handoff's own (unshare: root only).
func TestTagOutputJournal(t *testing.T) {
	spawns(t)
	if os.Getuid() != 0 {
		t.Skip("mounts the test's journal socket at /run/systemd/journal/socket in a namespace of handoff's: root only")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1):", err)
	}
	jdir := t.TempDir()
	jconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(jdir, "socket"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer jconn.Close()
	entries := make(chan map[string]string, 64)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			n, err := jconn.Read(buf)
			if err != nil {
				return
			}
			e := map[string]string{}
			for _, f := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n") {
				k, v, _ := strings.Cut(f, "=")
				e[k] = v
			}
			entries <- e
		}
	}()

	prog := filepath.Join(t.TempDir(), "tagged.sh")
	proc.WriteExec(t, prog, []byte(strings.Replace(tagProgram, "@APP@", appBin, 1)))
	dir := t.TempDir()
	d := &runningDaemon{t: t, dir: dir, addr: proc.FreeAddr(t), control: filepath.Join(dir, "control.sock"),
		logPath: filepath.Join(dir, "log"), exited: make(chan struct{})}
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(logf.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// A tmpfs over /run in the namespace alone, the test's socket mounted
	// where journald's would be; then handoff, the same process.
	script := `mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && mount --bind "$0" /run/systemd/journal && exec "$@"`
	args := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, jdir,
		handoffBin, "run", "--log-format", "json", "--control", d.control, "--listen", "web=" + d.addr, "--tag-output", "--workers", "2", "--", prog}
	d.cmd = exec.Command(unshare, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.Dir = dir
	d.cmd.Env = append(os.Environ(), "JOURNAL_STREAM="+strconv.FormatUint(st.Dev, 10)+":"+strconv.FormatUint(st.Ino, 10))
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.cleanup)
	d.waitRecord(15*time.Second, "event=output.tagged", "stream=stdout", "to=journal")
	d.waitRecord(15*time.Second, "event=output.tagged", "stream=stderr", "to=journal")
	d.waitWorkers(2)

	started := map[string]string{} // worker by pid
	for _, r := range findAll(d.records(), "event=generation.started") {
		started[r.Get("gen_pid")] = r.Get("worker")
	}
	want := map[string]bool{} // kind, stream and pid of the lines still to come
	for pid := range started {
		want["out stdout "+pid], want["err stderr "+pid], want["long stdout "+pid] = true, true, true
	}
	deadline := time.After(15 * time.Second)
	for len(want) > 0 {
		var e map[string]string
		select {
		case e = <-entries:
		case <-deadline:
			t.Fatalf("after 15 s, no journal entries for %v:\n%s", want, tail(d.log(), 4000))
		}
		pid, msg := e["HANDOFF_PID"], e["MESSAGE"]
		worker, ok := started[pid]
		if !ok || e["HANDOFF_WORKER"] != worker || e["HANDOFF_GENERATION"] != "1" || e["SYSLOG_PID"] != pid ||
			e["SYSLOG_IDENTIFIER"] != "tagged.sh" || e["PRIORITY"] != "6" {
			t.Errorf("entry %.300q: want HANDOFF_GENERATION=1, HANDOFF_WORKER, HANDOFF_PID and SYSLOG_PID of a process started (%v), SYSLOG_IDENTIFIER=tagged.sh, PRIORITY=6", e, started)
			continue
		}
		if m := regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(msg); m != nil && m[1] != pid {
			t.Errorf("MESSAGE %q of pid %s: HANDOFF_PID=%s", msg, m[1], pid)
		}
		kind := map[bool]string{true: "long"}[msg == strings.Repeat("x", 100000)]
		if strings.HasPrefix(msg, "out worker="+worker+" ") {
			kind = "out"
		} else if strings.HasPrefix(msg, "err worker="+worker+" ") {
			kind = "err"
		}
		delete(want, kind+" "+e["HANDOFF_STREAM"]+" "+pid)
	}
	d.stop()
	if strings.Contains(d.log(), "worker=") || strings.Contains(d.log(), "xxxxxxxx") {
		t.Errorf("the program's lines reached the stream too:\n%s", tail(d.log(), 4000))
	}
}

// TestTagOutputBadValue: a value --tag-output does not take is refused on
// one line, exit 2, naming the ones it takes.
func TestTagOutputBadValue(t *testing.T) {
	spawns(t)
	out, err := exec.Command(handoffBin, "run", "--listen", "127.0.0.1:80", "--tag-output=journal", "--", "true").CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, "--tag-output=stream") {
		t.Errorf("--tag-output=journal: %v, %q; want exit 2 and one line naming the values", err, msg)
	}
}
