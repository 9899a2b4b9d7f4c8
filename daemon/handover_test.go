//go:build linux

package daemon_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

// linesBin is examples/lines, dieBin testdata/handoverdie: built once, by
// the first test that needs them.
var (
	handoverBuild       sync.Once
	linesBin, dieBin    string
	handoverBuildErr    error
	handoverBuildDir, _ = os.MkdirTemp("", "handoff-handover-test-")
)

func handoverBins(t *testing.T) {
	t.Helper()
	handoverBuild.Do(func() {
		linesBin, dieBin = filepath.Join(handoverBuildDir, "lines"), filepath.Join(handoverBuildDir, "handoverdie")
		for _, b := range [][2]string{{linesBin, "../examples/lines"}, {dieBin, "./testdata/handoverdie"}} {
			if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
				handoverBuildErr = fmt.Errorf("building %s: %v\n%s", b[1], err, out)
				return
			}
		}
	})
	if handoverBuildErr != nil {
		t.Fatal(handoverBuildErr)
	}
}

// lineClient pipelines numbered lines on one connection to examples/lines,
// one every 5 ms and at most 8 unanswered, and checks each answer: "COUNT
// PID LINE" with COUNT the line's number — none lost, none answered twice.
type lineClient struct {
	c    net.Conn
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	sent    int
	got     int
	lastPID int
	pids    map[int]int // answers by pid
	err     error       // the first wrong answer, or the connection's end
}

func dialLines(t *testing.T, addr string) *lineClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lc := &lineClient{c: c, quit: make(chan struct{}), done: make(chan struct{}), pids: map[int]int{}}
	window := make(chan struct{}, 8)
	go func() { // the writer
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case window <- struct{}{}:
			case <-lc.quit:
				return
			case <-lc.done:
				return
			}
			select {
			case <-tick.C:
			case <-lc.quit:
				return
			case <-lc.done:
				return
			}
			lc.mu.Lock()
			lc.sent = i
			lc.mu.Unlock()
			if _, err := fmt.Fprintf(c, "%d\n", i); err != nil {
				return
			}
		}
	}()
	go func() { // the reader
		defer close(lc.done)
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			lc.mu.Lock()
			if err != nil {
				if lc.err == nil {
					lc.err = fmt.Errorf("after %d answers: %w", lc.got, err)
				}
				lc.mu.Unlock()
				return
			}
			f := strings.Fields(line)
			want := strconv.Itoa(lc.got + 1)
			if len(f) != 3 || f[0] != want || f[2] != want {
				lc.err = fmt.Errorf("answer %q, want count and line %s: a line lost or repeated", strings.TrimSpace(line), want)
				lc.mu.Unlock()
				return
			}
			lc.got++
			lc.lastPID, _ = strconv.Atoi(f[1])
			lc.pids[lc.lastPID]++
			lc.mu.Unlock()
			<-window
		}
	}()
	t.Cleanup(func() { c.Close() })
	return lc
}

// snapshot returns what lc has seen.
func (lc *lineClient) snapshot() (got, lastPID int, err error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.got, lc.lastPID, lc.err
}

// finish stops sending, waits for the answers to every line sent, and
// returns the first error seen.
func (lc *lineClient) finish(t *testing.T) error {
	t.Helper()
	close(lc.quit)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		lc.mu.Lock()
		sent, got, err := lc.sent, lc.got, lc.err
		lc.mu.Unlock()
		if err != nil {
			return err
		}
		if got >= sent {
			lc.c.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%d lines sent, %d answered after 10 s", lc.sent, lc.got)
}

// waitClients waits until ok holds for every client, or fails t.
func waitClients(t *testing.T, d *runningDaemon, cs []*lineClient, what string, ok func(got, pid int, err error) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		bad := -1
		for i, lc := range cs {
			if g, p, err := lc.snapshot(); !ok(g, p, err) {
				bad = i
				break
			}
		}
		if bad < 0 {
			return
		}
		if time.Now().After(deadline) {
			g, p, err := cs[bad].snapshot()
			t.Fatalf("client %d: not %s after 20 s (got %d, last pid %d, err %v)\n%s", bad, what, g, p, err, d.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSplit waits until ended of cs have ended and every other one has
// had 10 more answers from pid since the call, or fails t after 20 s;
// endedAre and onAre say which connections those should be.
func waitSplit(t *testing.T, d *runningDaemon, cs []*lineClient, ended, pid int, endedAre, onAre string) {
	t.Helper()
	marks := make([]int, len(cs))
	for i, lc := range cs {
		marks[i], _, _ = lc.snapshot()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		broken, on := 0, 0
		for i, lc := range cs {
			g, p, err := lc.snapshot()
			switch {
			case err != nil:
				broken++
			case p == pid && g >= marks[i]+10:
				on++
			}
		}
		if broken == ended && on == len(cs)-ended {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d connections ended (want %d, %s), %d served on by pid %d (want %d, %s)\n%s",
				broken, ended, endedAre, on, pid, len(cs)-ended, onAre, d.log())
		}
	}
}

// relayed waits for the handover.relayed record of the relay to gen, and
// returns its counts.
func relayed(t *testing.T, d *runningDaemon, terms ...string) (handedOver, refused, fallback int) {
	t.Helper()
	r := d.waitRecord(30*time.Second, append([]string{"event=handover.relayed"}, terms...)...)
	n := func(k string) int {
		v, err := strconv.Atoi(r.Get(k))
		if err != nil {
			t.Fatalf("handover.relayed without %s: %s", k, r)
		}
		return v
	}
	return n("handed_over"), n("refused"), n("fallback")
}

// TestHandoverReload: under handoff run --handover, examples/lines's 40
// connections, each pipelining numbered lines, move to the new generation
// at each of 3 reloads, relayed by handoff: 0 lines lost or repeated, 0
// reconnects, each answered by the 4 generations in turn; handoff's log,
// status and metrics count 120 connections handed over.
func TestHandoverReload(t *testing.T) {
	alongside(t)
	handoverBins(t)
	metricsAddr := proc.FreeAddr(t)
	d := startDaemon(t, []string{linesBin, "-log-format", "json", "-drain-timeout", "20s"}, "--handover", "--metrics", metricsAddr)
	const n = 40
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	first := d.serving()
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	pids := []int{first}
	for gen := 2; gen <= 4; gen++ {
		if out, code := d.reload(); code != 0 {
			t.Fatalf("reload: %d %s\n%s", code, out, d.log())
		}
		ho, ref, fb := relayed(t, d, "to_gen="+strconv.Itoa(gen))
		if ho != n || ref != 0 || fb != 0 {
			t.Fatalf("relay to generation %d: handed_over=%d refused=%d fallback=%d, want %d 0 0\n%s", gen, ho, ref, fb, n, d.log())
		}
		if r := logrec.Find(d.records(), "event=handover.relayed", "to_gen="+strconv.Itoa(gen), "err~"); r != nil {
			t.Fatalf("relay to generation %d ended on an error: %s", gen, r)
		}
		pid := d.serving()
		pids = append(pids, pid)
		waitClients(t, d, cs, "answered by the new generation", func(g, p int, err error) bool { return err == nil && p == pid })
	}
	total := 0
	for i, lc := range cs {
		if err := lc.finish(t); err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, d.log())
		}
		for _, p := range pids {
			if lc.pids[p] == 0 {
				t.Errorf("client %d: no answer from pid %d (pids %v)", i, p, lc.pids)
			}
		}
		total += lc.got
	}
	st := d.status()
	if st.Handover["handed_over"] != 3*n || st.Handover["fallback"] != 0 || st.Handover["refused"] != 0 {
		t.Errorf("status: handover %v, want handed_over=%d", st.Handover, 3*n)
	}
	text, err := exec.Command(handoffBin, "status", "--control", d.control).Output()
	if want := fmt.Sprintf("connections handed over: %d, refused: 0, fallen back to drain: 0", 3*n); err != nil || !strings.Contains(string(text), want) {
		t.Errorf("handoff status: %v, no %q in:\n%s", err, want, text)
	}
	body := scrape(t, metricsAddr)
	for _, want := range []string{fmt.Sprintf(`handoff_handover_connections_total{outcome="handed_over"} %d`, 3*n), "handoff_handover_duration_seconds_count 3"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	t.Logf("%d clients, %d lines answered in order by 4 generations (pids %v), 0 lost or repeated, 0 reconnects", n, total, pids)
}

// TestHandoverNewKilled: the new generation is killed -9 mid-handover (at
// the 17th connection offered to it, before that batch's commit): the relay
// ends, the old generation keeps every connection of the aborted batch and
// serves it on (those of batches committed before died with the new one, as
// after any crash); no connection is served by both.
func TestHandoverNewKilled(t *testing.T) {
	spawns(t)
	handoverBins(t)
	t.Setenv("DIE_AT", "17")
	d := startDaemon(t, nil, "--handover")
	proc.CopyExec(t, linesBin, d.prog)
	// The first generation is examples/app: replace it by lines, then by
	// the program that dies.
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	d.waitAlone(30 * time.Second)
	old := d.serving()
	const n = 40
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	proc.CopyExec(t, dieBin, d.prog)
	d.reload() // its outcome does not matter: it dies once it serves
	// fallback counts what reached handoff uncommitted: connections the
	// old process could not even send before the abort stay with it too.
	ho, ref, fb := relayed(t, d, "to_gen=3")
	if ref != 0 || fb == 0 || ho+fb > n {
		t.Fatalf("relay: handed_over=%d refused=%d fallback=%d, want some fallback and %d at most in all\n%s", ho, ref, fb, n, d.log())
	}
	kept := n - ho
	// Those that fell back are served on by the old generation.
	waitSplit(t, d, cs, ho, old, "those committed to the dead one", "those kept")
	for i, lc := range cs {
		if _, _, err := lc.snapshot(); err != nil {
			continue // committed to the new one, ended with it
		}
		if err := lc.finish(t); err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, d.log())
		}
		if len(lc.pids) != 1 {
			t.Errorf("client %d kept by the old generation was answered by %v: owned by two", i, lc.pids)
		}
	}
	t.Logf("killed -9 mid-handover: %d connections committed before died with it, %d kept and served on by the old generation (%d of them relayed and aborted)", ho, kept, fb)
}

// TestHandoverOldKilled: the old process is killed -9 mid-handover (once
// handoff has passed a commit on; one connection's turn at a time, so that
// a handover of 100 lasts a while; tried again if it ended first).
// The connections committed before live on in the new process, their
// counts intact; the others end with the old one. handoff's relay counts
// as fallen back those it passed on uncommitted; the new process closes
// what it had prepared for them. No connection is served by both.
func TestHandoverOldKilled(t *testing.T) {
	alongside(t)
	handoverBins(t)
	d := startDaemon(t, []string{linesBin, "-log-format", "json", "-handover-turns", "1"}, "--handover")
	const n = 100
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	// A handover that ended before the kill (the old process gone, or
	// every connection committed by then) is tried again: the kill must
	// land in the middle of one.
	var old, gen, ho, ref, fb int
	for attempt := 1; ; attempt++ {
		old, gen = d.serving(), attempt+1
		before := d.status().Handover["handed_over"]
		if out, code := d.reload(); code != 0 {
			t.Fatalf("reload: %d %s\n%s", code, out, d.log())
		}
		for deadline := time.Now().Add(20 * time.Second); d.status().Handover["handed_over"] == before; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no connection handed over 20 s after reload %d\n%s", attempt, d.log())
			}
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatal(err)
		}
		ho, ref, fb = relayed(t, d, "to_gen="+strconv.Itoa(gen))
		if ho < n {
			break
		}
		if attempt == 5 {
			t.Fatalf("5 handovers of %d connections each ended before the old process could be killed\n%s", n, d.log())
		}
		waitClients(t, d, cs, "answered by the new generation", func(g, p int, err error) bool { return err == nil && p != old })
	}
	if ref != 0 || ho == 0 || fb > n-ho {
		t.Fatalf("relay: handed_over=%d refused=%d fallback=%d, want some of %d moved, none refused\n%s", ho, ref, fb, n, d.log())
	}
	nw := d.serving()
	waitSplit(t, d, cs, n-ho, nw, "those not committed", "those committed")
	for i, lc := range cs {
		if _, _, err := lc.snapshot(); err != nil {
			continue // not committed: ended with the old process
		}
		if err := lc.finish(t); err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, d.log())
		}
		if lc.pids[old] == 0 || lc.pids[nw] == 0 {
			t.Errorf("client %d moved was answered by %v, want the old (%d) and the new process (%d)", i, lc.pids, old, nw)
		}
	}
	t.Logf("old process killed -9 mid-handover: %d of %d connections committed before live on in the new one; %d ended with the old (%d of them relayed and aborted)", ho, n, n-ho, fb)
}

// TestHandoverNewHangs: the new generation hangs at the 17th connection
// offered (it reads its channel no more): the old one gives up on that batch
// after its HandoverOptions.Timeout (2 s), the relay ends, and the old one
// keeps and serves on every connection not committed before.
func TestHandoverNewHangs(t *testing.T) {
	spawns(t)
	handoverBins(t)
	t.Setenv("DIE_AT", "17")
	t.Setenv("HANG", "1")
	d := startDaemon(t, nil, "--handover")
	proc.CopyExec(t, linesBin, d.prog)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	d.waitAlone(30 * time.Second)
	old := d.serving()
	const n = 40
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	proc.CopyExec(t, dieBin, d.prog)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	// fallback counts what reached handoff uncommitted: connections the
	// old process could not even send before the abort stay with it too.
	ho, ref, fb := relayed(t, d, "to_gen=3")
	if ref != 0 || fb == 0 || ho+fb > n {
		t.Fatalf("relay: handed_over=%d refused=%d fallback=%d, want some fallback and %d at most in all\n%s", ho, ref, fb, n, d.log())
	}
	kept := n - ho
	marks := make([]int, n)
	for i, lc := range cs {
		marks[i], _, _ = lc.snapshot()
	}
	deadline := time.Now().Add(20 * time.Second)
	for onOld := 0; onOld != kept; {
		onOld = 0
		for i, lc := range cs {
			if g, p, err := lc.snapshot(); err == nil && p == old && g >= marks[i]+10 {
				onOld++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections served on by the old pid %d, want %d\n%s", onOld, old, kept, d.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("new generation hung mid-handover: %d committed before (held by the hung one), %d kept and served on by the old generation (%d of them relayed and aborted)", ho, kept, fb)
}

// TestHandoverNewOutOfDescriptors: the new process runs out of descriptors
// (RLIMIT_NOFILE 40) while 60 connections arrive: it refuses those it cannot
// take, the relay counts them refused, and the old process serves them on;
// the others moved (the test program closes them once adopted).
func TestHandoverNewOutOfDescriptors(t *testing.T) {
	spawns(t)
	handoverBins(t)
	t.Setenv("DIE_AT", "0")
	t.Setenv("NOFILE", "40")
	d := startDaemon(t, nil, "--handover")
	proc.CopyExec(t, linesBin, d.prog)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	d.waitAlone(30 * time.Second)
	old := d.serving()
	const n = 60
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	proc.CopyExec(t, dieBin, d.prog)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	// The commit is counted as it passes; the relay ends only with the old
	// process, which drains those refused for 10 s.
	var ho, ref, fb int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h := d.status().Handover
		if ho, ref, fb = h["handed_over"], h["refused"], h["fallback"]; ho+ref+fb >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after 20 s: handover %v, want %d connections settled\n%s", h, n, d.log())
		}
	}
	if ref == 0 || ho == 0 || fb != 0 || ho+ref != n {
		t.Fatalf("status: handed_over=%d refused=%d fallback=%d, want some of both and %d in all\n%s", ho, ref, fb, n, d.log())
	}
	waitSplit(t, d, cs, ho, old, "those moved", "those refused")
	t.Logf("out of descriptors: %d of %d moved, %d refused and served on by the old generation", ho, n, ref)
}

// TestHandoverNotAdopted: a new generation that does not adopt (examples/
// app, which never calls handover.New): nothing moves, handoff logs
// handover.unavailable, and the old generation drains its connections as
// without --handover: answered on, in order, by the old pid.
func TestHandoverNotAdopted(t *testing.T) {
	alongside(t)
	handoverBins(t)
	d := startDaemon(t, nil, "--handover")
	proc.CopyExec(t, linesBin, d.prog)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	d.waitAlone(30 * time.Second)
	old := d.serving()
	const n = 20
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	proc.CopyExec(t, appBin, d.prog)
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	d.waitRecord(10*time.Second, "event=handover.unavailable", "to_gen=3")
	marks := make([]int, n)
	for i, lc := range cs {
		marks[i], _, _ = lc.snapshot()
	}
	waitClients(t, d, cs, "served on by the old generation", func(g, p int, err error) bool { return err == nil && p == old && g >= marks[0]+10 })
	for i, lc := range cs {
		if err := lc.finish(t); err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, d.log())
		}
		if len(lc.pids) != 1 {
			t.Errorf("client %d answered by %v, want the old pid %d alone", i, lc.pids, old)
		}
	}
	if r := logrec.Find(d.records(), "event=handover.relayed", "to_gen=3"); r != nil {
		t.Errorf("a relay to a generation that does not adopt: %s", r)
	}
}

// TestHandoverWorkers: with --workers 2, a reload rolls the workers and
// each old worker's connections move to the new worker of its index: 30
// connections, 0 lines lost or repeated, the two relays' counts adding up
// to 30.
func TestHandoverWorkers(t *testing.T) {
	alongside(t)
	handoverBins(t)
	d := startDaemon(t, []string{linesBin, "-log-format", "json"}, "--handover", "--workers", "2")
	d.waitWorkers(2)
	const n = 30
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, d.addr)
	}
	waitClients(t, d, cs, "answered 5 lines", func(g, p int, err error) bool { return err == nil && g >= 5 })
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s\n%s", code, out, d.log())
	}
	sum := 0
	for w := range 2 {
		ho, ref, fb := relayed(t, d, "to_gen=2", "worker="+strconv.Itoa(w))
		if ref != 0 || fb != 0 {
			t.Fatalf("worker %d: refused=%d fallback=%d\n%s", w, ref, fb, d.log())
		}
		sum += ho
	}
	if sum != n {
		t.Fatalf("%d connections handed over by the two workers, want %d\n%s", sum, n, d.log())
	}
	news := d.waitWorkers(2)
	waitClients(t, d, cs, "answered by a new worker", func(g, p int, err error) bool { return err == nil && (p == news[0] || p == news[1]) })
	for i, lc := range cs {
		if err := lc.finish(t); err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, d.log())
		}
	}
}

// scrape returns the text of handoff's /metrics at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
