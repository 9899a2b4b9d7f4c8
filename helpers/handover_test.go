package helpers_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// pipeliner pipelines numbered lines on one connection to a line server
// (examples/lines, python/example/lines.py), one every 5 ms and at most 8
// unanswered, and checks each answer "COUNT PID LINE": COUNT and LINE the
// line's number, so that a line lost or answered twice fails it.
type pipeliner struct {
	c    net.Conn
	quit chan struct{}

	mu         sync.Mutex
	sent, got  int
	last       int
	pids       map[int]bool
	err        error
	readerDone chan struct{}
}

func pipeline(t *testing.T, addr string) *pipeliner {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &pipeliner{c: c, quit: make(chan struct{}), pids: map[int]bool{}, readerDone: make(chan struct{})}
	window := make(chan struct{}, 8)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case window <- struct{}{}:
			case <-p.quit:
				return
			case <-p.readerDone:
				return
			}
			select {
			case <-tick.C:
			case <-p.quit:
				return
			}
			p.mu.Lock()
			p.sent = i
			p.mu.Unlock()
			if _, err := fmt.Fprintf(c, "%d\n", i); err != nil {
				return
			}
		}
	}()
	go func() {
		defer close(p.readerDone)
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			p.mu.Lock()
			if err != nil {
				if p.err == nil {
					p.err = fmt.Errorf("after %d answers: %w", p.got, err)
				}
				p.mu.Unlock()
				return
			}
			f, want := strings.Fields(line), strconv.Itoa(p.got+1)
			if len(f) != 3 || f[0] != want || f[2] != want {
				p.err = fmt.Errorf("answer %q, want count and line %s: a line lost or repeated", strings.TrimSpace(line), want)
				p.mu.Unlock()
				return
			}
			p.got++
			p.last, _ = strconv.Atoi(f[1])
			p.pids[p.last] = true
			p.mu.Unlock()
			<-window
		}
	}()
	return p
}

func (p *pipeliner) state() (got, last int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got, p.last, p.err
}

// scripted is handoff run --handover over a shell script whose exec
// line each test switches between reloads (the process keeps its pid,
// hence LISTEN_PID), started with examples/lines.
type scripted struct {
	goLines    string               // examples/lines, built
	use        func(argv ...string) // the script's exec line
	useScript  func(body string)    // the whole script
	addr       string
	control    string
	readLog    func() string
	waitRecord func(terms ...string) logrec.Record
}

// startScripted starts handoff run --handover on a script that runs
// examples/lines, and returns once its first generation is ready.
func startScripted(t *testing.T) *scripted {
	t.Helper()
	dir := t.TempDir()
	h := &scripted{goLines: filepath.Join(dir, "lines")}
	if out, err := exec.Command("go", "build", "-o", h.goLines, "../examples/lines").CombinedOutput(); err != nil {
		t.Fatalf("building examples/lines: %v\n%s", err, out)
	}
	script := filepath.Join(dir, "run.sh")
	h.useScript = func(body string) {
		if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h.use = func(argv ...string) { h.useScript("exec " + strings.Join(argv, " ") + "\n") }
	h.use(h.goLines, "-log-format", "json")
	h.addr = proc.FreeAddr(t)
	h.control = filepath.Join(dir, "control.sock")
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd := exec.Command(handoffBin, "run", "--handover", "--log-format", "json", "--control", h.control, "--listen", "web="+h.addr, "--", "/bin/sh", script)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for _, p := range proc.Descendants(os.Getpid()) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		proc.ReapAll()
	})
	h.readLog = func() string { b, _ := os.ReadFile(logPath); return string(b) }
	h.waitRecord = func(terms ...string) logrec.Record {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if r := logrec.Find(logrec.Parse(h.readLog()), terms...); r != nil {
				return r
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no log record %q:\n%s", terms, h.readLog())
		return nil
	}
	h.waitRecord("event=generation.ready", "gen=1")
	return h
}

// TestPythonHandover: under handoff run --handover, 20 connections, each
// pipelining numbered lines, move through 3 reloads between a Go program
// (examples/lines), the Python helper's (example/lines.py) and back: the
// two speak one protocol through handoff's relay. 0 lines lost or
// repeated, 0 reconnects, each connection answered by the 4 processes.
func TestPythonHandover(t *testing.T) {
	spawns(t)
	py := example(t, "python3", "python/example/lines.py")
	h := startScripted(t)
	goLines, use, addr, control, readLog, waitRecord := h.goLines, h.use, h.addr, h.control, h.readLog, h.waitRecord
	const n = 20
	ps := make([]*pipeliner, n)
	for i := range ps {
		ps[i] = pipeline(t, addr)
	}
	waitClients := func(what string, ok func(got, last int) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; i < n; {
			got, last, err := ps[i].state()
			if err != nil {
				t.Fatalf("client %d: %v\n%s", i, err, readLog())
			}
			if ok(got, last) {
				i++
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d: not %s after 20 s (got %d, last pid %d)\n%s", i, what, got, last, readLog())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitClients("answered", func(got, _ int) bool { return got >= 5 })
	programs := [][]string{{"python3", py[1]}, {goLines, "-log-format", "json"}, {"python3", py[1]}}
	for i, argv := range programs {
		gen := strconv.Itoa(i + 2)
		use(argv...)
		if out, err := exec.Command(handoffBin, "reload", "--control", control).CombinedOutput(); err != nil {
			t.Fatalf("reload: %v: %s\n%s", err, out, readLog())
		}
		r := waitRecord("event=handover.relayed", "to_gen="+gen)
		if r.Get("handed_over") != strconv.Itoa(n) || r.Get("fallback") != "0" || r.Get("refused") != "0" || r.Get("err") != "" {
			t.Fatalf("relay to generation %s (%s): %s\n%s", gen, argv[0], r, readLog())
		}
		pid, _ := strconv.Atoi(r.Get("to_pid"))
		waitClients("answered by generation "+gen, func(_, last int) bool { return last == pid })
	}
	lines := 0
	for i, p := range ps {
		close(p.quit)
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.mu.Lock()
			sent, got, err, pids := p.sent, p.got, p.err, len(p.pids)
			p.mu.Unlock()
			if err != nil {
				t.Fatalf("client %d: %v\n%s", i, err, readLog())
			}
			if got >= sent {
				if pids != 4 {
					t.Errorf("client %d answered by %d processes, want 4", i, pids)
				}
				lines += got
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d: %d sent, %d answered after 10 s", i, sent, got)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("%d connections, %d lines answered in order by Go, Python, Go and Python processes in turn, 0 lost or repeated, 0 reconnects", n, lines)
}

// TestPythonHandoverOutOfDescriptors: a Python process that adopts from a
// Go one (examples/lines, which raises its own descriptor limit) has room
// for fewer descriptors than there are connections (RLIMIT_NOFILE 32, 40
// connections): it refuses those whose descriptor did not arrive, saying
// why and how to fix it, and the Go process serves them on; the others
// move. No line is lost or repeated on any.
func TestPythonHandoverOutOfDescriptors(t *testing.T) {
	spawns(t)
	py := example(t, "python3", "python/example/lines.py")
	h := startScripted(t)
	const n = 40
	ps := make([]*pipeliner, n)
	for i := range ps {
		ps[i] = pipeline(t, h.addr)
	}
	marks := make([]int, n)
	for i, p := range ps {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got, _, err := p.state()
			if err != nil {
				t.Fatalf("client %d: %v\n%s", i, err, h.readLog())
			}
			if got >= 5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d: not answered 5 lines after 20 s\n%s", i, h.readLog())
			}
		}
	}
	old := h.waitRecord("event=generation.ready", "gen=1").Get("gen_pid")
	h.useScript("ulimit -n 32\nexec python3 " + py[1] + "\n")
	if out, err := exec.Command(handoffBin, "reload", "--control", h.control).CombinedOutput(); err != nil {
		t.Fatalf("reload: %v: %s\n%s", err, out, h.readLog())
	}
	// The commit is counted as it passes; the relay's record comes with the
	// old process's end, which drains those refused first.
	refused := h.waitRecord("event=handover.refused")
	if why := refused.Get("why"); !strings.Contains(why, "out of descriptors") || !strings.Contains(why, "RLIMIT_NOFILE 32") || !strings.Contains(why, "raise it") {
		t.Errorf("the refusal says %q; want what ran out, the limit and how to raise it", why)
	}
	for i, p := range ps {
		got, _, _ := p.state()
		marks[i] = got
	}
	onOld, moved := 0, 0
	for i, p := range ps {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got, last, err := p.state()
			if err != nil {
				t.Fatalf("client %d: %v\n%s", i, err, h.readLog())
			}
			if got >= marks[i]+20 {
				if strconv.Itoa(last) == old {
					onOld++
				} else {
					moved++
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d: answered %d lines since the refusal after 20 s, want 20\n%s", i, got-marks[i], h.readLog())
			}
		}
	}
	nRefused := 0 // over every record: a handover may refuse in several batches
	for _, r := range logrec.Parse(h.readLog()) {
		if r.Get("event") == "handover.refused" {
			k, _ := strconv.Atoi(r.Get("conns"))
			nRefused += k
		}
	}
	if onOld == 0 || moved == 0 || onOld != nRefused {
		t.Fatalf("%d connections served on by the old process (pid %s), %d moved; %d refused: want some of both, those refused on the old one\n%s", onOld, old, moved, nRefused, h.readLog())
	}
	t.Logf("Python under RLIMIT_NOFILE 32 adopting %d connections: %d moved, %d refused (%q) and served on by the Go process, 0 lines lost", n, moved, onOld, refused.Get("why"))
}

// TestPythonHandoverProtocol runs testdata/handover_protocol.py: the Python
// helper's Handover against itself, without handoff — hello seen as
// handed_over, 2 connections moved with their state and unread bytes and
// usable in the new side, 1 refused by check and still the old side's, and
// one kept through an abort (the new side closed its channel before
// answering), after which nothing more is offered.
func TestPythonHandoverProtocol(t *testing.T) {
	spawns(t)
	pythonScript(t, "testdata/handover_protocol.py")
}

// TestPythonHandoverAfterReset runs testdata/handover_reset.py: the old end
// of the channel closed with an answer unread, which the kernel reports as
// a reset ahead of the offer and commit sent before it; the Python helper
// reads on and adopts the committed connection (it stopped at the reset
// before, leaving the connection in flight).
func TestPythonHandoverAfterReset(t *testing.T) {
	spawns(t)
	pythonScript(t, "testdata/handover_reset.py")
}
