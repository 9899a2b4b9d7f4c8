//go:build linux

package upgrader_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// linesBin is examples/lines, faultBin testdata/handoverfault, built at the
// first test that needs them, beside the binaries TestMain builds.
var (
	handoverBuild      sync.Once
	linesBin, faultBin string
	handoverBuildErr   error
)

func handoverBins(t *testing.T) {
	t.Helper()
	spawns(t)
	handoverBuild.Do(func() {
		dir := filepath.Dir(serverBin)
		linesBin, faultBin = filepath.Join(dir, "lines"), filepath.Join(dir, "handoverfault")
		for _, b := range [][2]string{{linesBin, "../examples/lines"}, {faultBin, "./testdata/handoverfault"}} {
			out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput()
			if err != nil {
				handoverBuildErr = fmt.Errorf("building %s: %v\n%s", b[1], err, out)
				return
			}
		}
	})
	if handoverBuildErr != nil {
		t.Fatal(handoverBuildErr)
	}
}

// lineClient pipelines numbered lines on one connection, at most window
// unanswered, and checks every answer: "COUNT PID LINE", COUNT one more
// each time (the connection's state), LINE the one sent. It never
// reconnects: a connection that ends before it stops is a failure.
type lineClient struct {
	c      net.Conn
	prefix []string // lines sent first, then the numbers
	window chan struct{}
	stop   chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	sent int
	got  int
	pids map[int]int // answers by pid
	last int         // pid of the last answer
	end  int         // the number of the line "end", once sent
	pace time.Duration
	err  error
}

func dialLines(t *testing.T, addr string, window int, prefix ...string) *lineClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineClient{c: c, prefix: prefix, window: make(chan struct{}, window), stop: make(chan struct{}), done: make(chan struct{}), pids: map[int]int{}}
}

func (lc *lineClient) line(k int) string {
	if k <= len(lc.prefix) {
		return lc.prefix[k-1]
	}
	return strconv.Itoa(k)
}

// run sends and checks until stop is closed: it then sends "end" and
// returns once every line is answered.
func (lc *lineClient) run() {
	go func() { // the writer
		w := bufio.NewWriter(lc.c)
		for {
			select {
			case <-lc.stop:
				lc.mu.Lock()
				lc.sent++
				lc.end = lc.sent
				lc.mu.Unlock()
				fmt.Fprintf(w, "end\n")
				_ = w.Flush()
				return
			case lc.window <- struct{}{}:
			}
			time.Sleep(lc.pace) // a pace, not a wait
			lc.mu.Lock()
			lc.sent++
			k := lc.sent
			lc.mu.Unlock()
			fmt.Fprintf(w, "%s\n", lc.line(k))
			if len(lc.window) == cap(lc.window) || k <= len(lc.prefix) {
				if err := w.Flush(); err != nil {
					return
				}
			}
		}
	}()
	defer close(lc.done)
	r := bufio.NewReader(lc.c)
	for {
		_ = lc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		s, err := r.ReadString('\n')
		if err != nil {
			lc.fail(fmt.Errorf("after %d answers: %v", lc.got, err))
			return
		}
		f := strings.SplitN(strings.TrimSuffix(s, "\n"), " ", 3)
		lc.mu.Lock()
		lc.got++
		k, end := lc.got, lc.end
		want := lc.line(k)
		if k == end {
			want = "end"
		}
		lc.mu.Unlock()
		if len(f) != 3 || f[0] != strconv.Itoa(k) || f[2] != want {
			lc.fail(fmt.Errorf("answer %d is %q, want count %d and line %q", k, s, k, want))
			return
		}
		pid, _ := strconv.Atoi(f[1])
		lc.mu.Lock()
		lc.pids[pid]++
		lc.last = pid
		lc.mu.Unlock()
		if k == end {
			return
		}
		<-lc.window
	}
}

func (lc *lineClient) fail(err error) {
	lc.mu.Lock()
	if lc.err == nil {
		lc.err = err
	}
	lc.mu.Unlock()
}

func (lc *lineClient) answeredBy(pid int) bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.pids[pid] > 0 || lc.err != nil
}

// stopClients stops every client of cs and waits for the answers to all
// it sent, failing t on a client's error.
func stopClients(t *testing.T, s *server, cs []*lineClient) {
	t.Helper()
	for _, lc := range cs {
		close(lc.stop)
	}
	for _, lc := range cs {
		select {
		case <-lc.done:
		case <-time.After(20 * time.Second):
			t.Fatal("a client still waits for answers after 20 s")
		}
		if lc.err != nil {
			t.Fatalf("a client (sent %d, answers by pid %v): %v; log:\n%s", lc.sent, lc.pids, lc.err, tail(s.log(), 30))
		}
	}
}

// waitAll waits until cond holds for every client.
func waitAll(t *testing.T, s *server, cs []*lineClient, timeout time.Duration, what string, cond func(*lineClient) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, lc := range cs {
		for !cond(lc) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after %v; log:\n%s", what, timeout, tail(s.log(), 40))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// handoverConns is how many clients TestHandoverLines runs: 200, or
// $HANDOFF_TEST_HANDOVER_CONNS to measure.
func handoverConns() int {
	if n, err := strconv.Atoi(os.Getenv("HANDOFF_TEST_HANDOVER_CONNS")); err == nil && n > 0 {
		return n
	}
	return 200
}

// TestHandoverLines: examples/lines, 200 clients each pipelining numbered
// lines (8 unanswered at most) through 3 SIGHUPs. Every connection moves at
// every release: each old generation exits as soon as it has handed them
// over (a connection left to drain would keep it 30 s), every client is
// answered by all 4 generations, and every answer comes in order with the
// count carried on — no line lost or answered twice, no connection closed.
func TestHandoverLines(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, linesBin, nil, nil, nil, "-log-format", "json", "-drain-timeout", "30s")
	pid := s.waitPid(0, 10*time.Second)
	n := handoverConns()
	cs := make([]*lineClient, n)
	for i := range cs {
		cs[i] = dialLines(t, s.addr, 8)
		// 20,000 lines/s in all at most, 100 per client.
		cs[i].pace = max(10*time.Millisecond, time.Duration(n)*50*time.Microsecond)
		go cs[i].run()
	}
	waitAll(t, s, cs, 20*time.Second, "every client answered", func(lc *lineClient) bool { return lc.answeredBy(pid) })
	pids := []int{pid}
	for r := 0; r < 3; r++ {
		old := s.signal(syscall.SIGHUP)
		pid = s.waitPid(old, 20*time.Second)
		s.waitExited(old, 20*time.Second)
		pids = append(pids, pid)
		waitAll(t, s, cs, 20*time.Second, fmt.Sprintf("every client answered by generation pid %d", pid), func(lc *lineClient) bool { return lc.answeredBy(pid) })
	}
	lines := 0
	stopClients(t, s, cs)
	for _, lc := range cs {
		for _, p := range pids {
			if lc.pids[p] == 0 {
				t.Fatalf("a client was never answered by pid %d: %v", p, lc.pids)
			}
		}
		lines += lc.got
	}
	moved := 0
	for _, r := range s.records() {
		if r.Match("event=handover.committed") {
			c, _ := strconv.Atoi(r.Get("conns"))
			moved += c
			t.Logf("pid %s handed over %s connections in %s ms (%s/s), %s ms of CPU", r.Get("pid"), r.Get("conns"), r.Get("took_ms"), r.Get("per_s"), r.Get("cpu_ms"))
		}
	}
	if moved != 3*n {
		t.Errorf("handover.committed counts %d connections, want %d", moved, 3*n)
	}
	t.Logf("%d clients, %d lines answered in order across 4 generations, 0 lost or repeated, 0 reconnects", n, lines)
	for _, lc := range cs {
		lc.c.Close()
	}
	s.stop()
}

// TestHandoverInTurns: examples/lines with -handover-turns 4, 120 clients
// each sending one numbered line at a time, through a SIGHUP. The
// connections stop to be offered four at a time (OnTurn), and the others
// are served on meanwhile: lines sent after a client had its first answer
// from the new generation are still answered by the old one — which cannot
// happen when every connection stops at once, since the first commit comes
// after every reader has stopped. Every connection moves, and no line is
// lost or answered twice.
func TestHandoverInTurns(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, linesBin, nil, nil, nil, "-log-format", "json", "-drain-timeout", "30s", "-handover-turns", "4")
	old := s.waitPid(0, 10*time.Second)
	const n = 120
	var (
		sends    atomic.Int64 // lines sent by all clients: the clock
		firstNew atomic.Int64 // the clock at the first answer from another pid
		lateOld  atomic.Int64 // answers from old to lines sent after that
		answered atomic.Int64 // clients answered by old once
	)
	stop := make(chan struct{})
	errs := make(chan error, n)
	lastPid := make([]atomic.Int64, n)
	conns := make([]net.Conn, n)
	for i := range n {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		t.Cleanup(func() { c.Close() })
		go func() {
			r := bufio.NewReader(c)
			for k := 1; ; k++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				at := sends.Add(1)
				count, pid, err := roundTrip(c, r, strconv.Itoa(k))
				if err == nil && count != k {
					err = fmt.Errorf("line %d answered with count %d", k, count)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d, line %d: %w", i, k, err)
					return
				}
				if k == 1 {
					answered.Add(1)
				}
				lastPid[i].Store(int64(pid))
				if pid == old {
					if fn := firstNew.Load(); fn != 0 && at > fn {
						lateOld.Add(1)
					}
				} else {
					firstNew.CompareAndSwap(0, sends.Load())
				}
				time.Sleep(2 * time.Millisecond) // a pace, not a wait
			}
		}()
	}
	for deadline := time.Now().Add(20 * time.Second); answered.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients answered before the release; log:\n%s", answered.Load(), n, tail(s.log(), 20))
		}
	}
	s.signal(syscall.SIGHUP)
	pid := s.waitPid(old, 20*time.Second)
	s.waitExited(old, 20*time.Second)
	for i := range n { // each client's next answer comes from the new pid
		for deadline := time.Now().Add(20 * time.Second); lastPid[i].Load() != int64(pid); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("client %d last answered by pid %d, not by the new generation %d", i, lastPid[i].Load(), pid)
			}
		}
	}
	close(stop)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	moved := 0
	for _, r := range s.records() {
		if r.Match("event=handover.committed") {
			c, _ := strconv.Atoi(r.Get("conns"))
			moved += c
		}
	}
	if moved != n {
		t.Errorf("handover.committed counts %d connections, want %d", moved, n)
	}
	if strings.Contains(s.log(), "handover.hurried") {
		t.Error("the turns were hurried: they did not end with their Offers")
	}
	t.Logf("%d lines answered by the old generation after the first answer from the new one", lateOld.Load())
	if lateOld.Load() == 0 {
		t.Error("no line sent after the first answer from the new generation was answered by the old one: the connections did not wait for their turns")
	}
	for _, c := range conns {
		c.Close()
	}
	s.stop()
}

// roundTrip sends line on c and returns the answer's count and pid, or an
// error if the connection ended.
func roundTrip(c net.Conn, r *bufio.Reader, line string) (count, pid int, err error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return 0, 0, err
	}
	s, err := r.ReadString('\n')
	if err != nil {
		return 0, 0, err
	}
	f := strings.SplitN(strings.TrimSuffix(s, "\n"), " ", 3)
	if len(f) != 3 || f[2] != line {
		return 0, 0, fmt.Errorf("answer %q to %q", s, line)
	}
	count, _ = strconv.Atoi(f[0])
	pid, _ = strconv.Atoi(f[1])
	return count, pid, nil
}

// conn is a client of the fault tests: one line at a time.
type conn struct {
	c    net.Conn
	r    *bufio.Reader
	sent int
}

func dialConns(t *testing.T, addr string, n int, first ...string) []*conn {
	t.Helper()
	cs := make([]*conn, n)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = &conn{c: c, r: bufio.NewReader(c)}
		lines := append([]string{"hello"}, first...)
		for _, l := range lines {
			if _, _, err := cs[i].trip(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	return cs
}

// trip sends one line and checks the count goes on.
func (c *conn) trip(line string) (pid int, ok bool, err error) {
	count, pid, err := roundTrip(c.c, c.r, line)
	if err != nil {
		return 0, false, err
	}
	c.sent++
	if count != c.sent {
		return pid, false, fmt.Errorf("count %d after %d lines: state lost or a line repeated", count, c.sent)
	}
	return pid, true, nil
}

// recordInt returns key of the first record matching terms, as a number.
// handedOut waits until the old generation's handover.committed and
// handover.aborted records account for n connections (an abort can be
// logged in more than one record: once for the batches in flight, once for
// offers that came after), and returns their sums.
func handedOut(s *server, old, n int) (committed, aborted int) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		committed, aborted = 0, 0
		for _, r := range s.records() {
			c, _ := strconv.Atoi(r.Get("conns"))
			switch {
			case r.Match("event=handover.committed", "pid="+strconv.Itoa(old)):
				committed += c
			case r.Match("event=handover.aborted", "pid="+strconv.Itoa(old)):
				aborted += c
			}
		}
		if committed+aborted == n && aborted > 0 {
			return committed, aborted
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the old generation logged %d committed and %d aborted of %d connections; log:\n%s", committed, aborted, n, s.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCommitted waits until old's handover.committed records add up to n
// connections: offers that do not come together are logged apart (a run
// without the race detector logged 3 as 2 and 1).
func waitCommitted(s *server, old, n int) {
	s.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		committed := 0
		for _, r := range s.records() {
			if r.Match("event=handover.committed", "pid="+strconv.Itoa(old)) {
				c, _ := strconv.Atoi(r.Get("conns"))
				committed += c
			}
		}
		if committed == n {
			return
		}
		if committed > n || time.Now().After(deadline) {
			s.t.Fatalf("the old generation logged %d connections committed, want %d; log:\n%s", committed, n, s.log())
		}
	}
}

func recordInt(s *server, key string, terms ...string) int {
	r := s.waitRecord(20*time.Second, terms...)
	n, _ := strconv.Atoi(r.Get(key))
	return n
}

// TestHandoverClientsLeave: clients that leave while their connections
// are handed over, one turn at a time (examples/lines -handover-turns 1):
// of 60, each at its own moment from the handover's start, half send three lines and
// shut their side (FIN behind the lines) and half close outright, while 60
// others pipeline on. Every line sent before a FIN is answered in order,
// then the connection ends cleanly — by whichever generation had it — and
// the old generation exits without waiting out its drain (60 s) for a
// connection that went; the others move with nothing lost.
func TestHandoverClientsLeave(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, linesBin, nil, nil, nil, "-log-format", "json", "-drain-timeout", "60s", "-handover-turns", "1")
	pid := s.waitPid(0, 10*time.Second)
	const n = 60
	stay := make([]*lineClient, n)
	for i := range stay {
		stay[i] = dialLines(t, s.addr, 4)
		stay[i].pace = 10 * time.Millisecond
		go stay[i].run()
	}
	type leaver struct {
		c net.Conn
		r *bufio.Reader
	}
	leave := make([]leaver, n)
	for i := range leave {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		leave[i] = leaver{c: c, r: bufio.NewReader(c)}
		if count, _, err := roundTrip(c, leave[i].r, "hello"); err != nil || count != 1 {
			t.Fatalf("leaver %d before the SIGHUP: count %d, %v", i, count, err)
		}
	}
	waitAll(t, s, stay, 20*time.Second, "every client answered", func(lc *lineClient) bool { return lc.answeredBy(pid) })
	old := s.signal(syscall.SIGHUP)
	s.waitRecord(20*time.Second, "event=handover.started")
	type outcome struct {
		by  int // the pid that answered the last line, for those that shut
		err error
	}
	outcomes := make(chan outcome, n)
	for i, l := range leave {
		go func() {
			// Each at its own moment from the handover's start (a pace,
			// not a wait): where each falls — before its turn, offered, or
			// adopted — varies; which generation answered the lines of
			// those that shut their side is logged.
			time.Sleep(time.Duration(i) * 3 * time.Millisecond)
			if i%2 == 1 {
				outcomes <- outcome{err: l.c.Close()}
				return
			}
			_ = l.c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := fmt.Fprintf(l.c, "a\nb\nc\n"); err != nil {
				outcomes <- outcome{err: fmt.Errorf("leaver %d writing: %w", i, err)}
				return
			}
			if err := l.c.(*net.TCPConn).CloseWrite(); err != nil {
				outcomes <- outcome{err: fmt.Errorf("leaver %d shutting its side: %w", i, err)}
				return
			}
			by := 0
			for k, want := range []string{"a", "b", "c"} {
				line, err := l.r.ReadString('\n')
				f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 3)
				if err != nil || len(f) != 3 || f[0] != strconv.Itoa(k+2) || f[2] != want {
					outcomes <- outcome{err: fmt.Errorf("leaver %d: answer %q, %v; want count %d and line %q", i, line, err, k+2, want)}
					return
				}
				by, _ = strconv.Atoi(f[1])
			}
			if rest, err := l.r.ReadString('\n'); err != io.EOF || rest != "" {
				outcomes <- outcome{err: fmt.Errorf("leaver %d after its answers: %q, %v; want the end", i, rest, err)}
				return
			}
			outcomes <- outcome{by: by}
		}()
	}
	byOld, byNew := 0, 0
	for range n {
		o := <-outcomes
		if o.err != nil {
			t.Errorf("%v", o.err)
		}
		switch {
		case o.by == old:
			byOld++
		case o.by != 0:
			byNew++
		}
	}
	pid = s.waitPid(old, 20*time.Second)
	s.waitExited(old, 30*time.Second) // its drain would last 60 s
	waitAll(t, s, stay, 20*time.Second, "every client answered by the new generation", func(lc *lineClient) bool { return lc.answeredBy(pid) })
	stopClients(t, s, stay)
	t.Logf("of %d clients that left during the handover: %d shut their side, their lines answered by the old generation (%d) or the new one (%d), %d closed; %d others moved, nothing lost", n, n/2, byOld, byNew, n/2, n)
	for _, lc := range stay {
		lc.c.Close()
	}
	s.stop()
}

// TestHandoverStateTooLarge: a connection whose state is over
// MaxHandoverState is not offered (a clear error in the log) and drains in
// the old generation, its count intact; the others move.
func TestHandoverStateTooLarge(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, faultBin, nil, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	big := dialConns(t, s.addr, 1, "pad 70000")[0]
	small := dialConns(t, s.addr, 3)
	s.signal(syscall.SIGHUP)
	pid := s.waitPid(old, 20*time.Second)
	r := s.waitRecord(20*time.Second, "event=handover.invalid", "pid="+strconv.Itoa(old))
	if !strings.Contains(r.Get("err"), "over the limit") {
		t.Errorf("handover.invalid says %q", r.Get("err"))
	}
	waitCommitted(s, old, 3)
	for _, c := range small {
		if p, _, err := c.trip("after"); err != nil || p != pid {
			t.Fatalf("a small connection after the handover: pid %d (want %d), %v", p, pid, err)
		}
	}
	if p, _, err := big.trip("after"); err != nil || p != old {
		t.Fatalf("the large one after the handover: pid %d (want the old %d, draining), %v", p, old, err)
	}
	big.c.Close()
	s.waitExited(old, 20*time.Second)
	for _, c := range small {
		c.c.Close()
	}
	s.stop()
}

// TestHandoverStillReading: a program that offers a connection while its
// reader is still in Read is refused with ErrStillInUse; the connection is
// untouched and drains in the old generation.
func TestHandoverStillReading(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, faultBin, nil, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	racy := dialConns(t, s.addr, 1, "racy")[0]
	other := dialConns(t, s.addr, 1)[0]
	s.signal(syscall.SIGHUP)
	pid := s.waitPid(old, 20*time.Second)
	r := s.waitRecord(20*time.Second, "event=handover.invalid", "pid="+strconv.Itoa(old))
	if !strings.Contains(r.Get("err"), "still in progress") {
		t.Errorf("handover.invalid says %q", r.Get("err"))
	}
	s.waitRecord(20*time.Second, "event=handover.committed", "conns=1")
	if p, _, err := other.trip("after"); err != nil || p != pid {
		t.Fatalf("the other connection: pid %d (want %d), %v", p, pid, err)
	}
	for i := 0; i < 3; i++ {
		if p, _, err := racy.trip("after"); err != nil || p != old {
			t.Fatalf("the connection offered while read: pid %d (want the old %d), %v", p, old, err)
		}
	}
	racy.c.Close()
	s.waitExited(old, 20*time.Second)
	other.c.Close()
	s.stop()
}

// split sends one more line on every connection and sorts them by who
// answered: the old generation, the new one, or nobody (closed).
func split(t *testing.T, cs []*conn, old, pid int) (byOld, byNew, closed int) {
	t.Helper()
	for _, c := range cs {
		p, _, err := c.trip("after")
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			// Neither answered nor closed: its descriptor is held where
			// nobody serves it (in flight in a channel, say).
			t.Fatalf("a connection is neither answered nor closed after 10 s: %v", err)
		case err != nil && p == 0:
			closed++
		case err != nil:
			t.Fatalf("pid %d: %v", p, err)
		case p == old:
			byOld++
		case p == pid:
			byNew++
		default:
			t.Fatalf("answered by pid %d, neither %d nor %d", p, old, pid)
		}
	}
	return
}

// TestHandoverNewOutOfDescriptors: the new generation runs with
// RLIMIT_NOFILE 48; the connections it cannot hold are refused and drain in
// the old generation, the others move; none is lost or closed.
func TestHandoverNewOutOfDescriptors(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, faultBin, []string{"HOF_NOFILE=48"}, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	cs := dialConns(t, s.addr, 120)
	s.signal(syscall.SIGHUP)
	pid := s.waitPid(old, 20*time.Second)
	r := s.waitRecord(20*time.Second, "event=handover.refused", "pid="+strconv.Itoa(old))
	t.Logf("old generation: %v", r)
	byOld, byNew, closed := split(t, cs, old, pid)
	t.Logf("of %d connections: %d moved, %d refused and drained, %d closed", len(cs), byNew, byOld, closed)
	if closed != 0 || byOld == 0 || byNew == 0 {
		t.Fatalf("%d moved, %d drained, %d closed: want some of each of the first two, none closed", byNew, byOld, closed)
	}
	for _, c := range cs {
		c.c.Close()
	}
	s.waitExited(old, 20*time.Second)
}

// TestHandoverNewKilled: the new generation is killed with SIGKILL in the
// middle of a handover (its Check stalls past the 20th connection, in batches
// of 8, once a commit is in). What was committed dies with it; the old generation keeps every
// connection it had not committed and serves it on, count intact.
func TestHandoverNewKilled(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, faultBin, []string{"HOF_BATCH=8", "HOF_STALL_AFTER=20"}, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	cs := dialConns(t, s.addr, 100) // more than 8 batches of 8: see HOF_STALL_AFTER
	s.signal(syscall.SIGHUP)
	st := s.waitRecord(20*time.Second, "event=test.stalled")
	child, _ := strconv.Atoi(st.Get("pid"))
	if child <= 0 {
		t.Fatalf("no pid in %v", st)
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.seen[child] = true
	// What the old generation committed: the new one's log may lag behind
	// (batches are pipelined; a commit it had not read when it stalled
	// was still its own), so count from the old one's. Its figures are
	// logged before the aborted Offers return, so before the clients below
	// can be served.
	committed, aborted := handedOut(s, old, len(cs))
	byOld, byNew, closed := split(t, cs, old, child)
	t.Logf("of %d connections: %d committed to the killed generation (lost with it), %d aborted in flight and kept, %d served on by the old one", len(cs), closed, aborted, byOld)
	if byNew != 0 || closed != committed || byOld != len(cs)-committed || aborted != len(cs)-committed {
		t.Fatalf("%d served by the old generation, %d closed, %d by the dead one; %d were committed, %d aborted", byOld, closed, byNew, committed, aborted)
	}
}

// TestHandoverOldKilled: the old generation is killed with SIGKILL in the
// middle of a handover. The connections committed before live on in the new
// generation; those it had prepared are closed there (the new generation
// logs how many), the rest die with the old one.
func TestHandoverOldKilled(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, faultBin, []string{"HOF_BATCH=8", "HOF_STALL_AFTER=20"}, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	cs := dialConns(t, s.addr, 100) // more than 8 batches of 8: see HOF_STALL_AFTER
	s.signal(syscall.SIGHUP)
	st := s.waitRecord(20*time.Second, "event=test.stalled")
	child, _ := strconv.Atoi(st.Get("pid"))
	if child <= 0 {
		t.Fatalf("no pid in %v", st)
	}
	s.seen[child] = true
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	end := s.waitRecord(20*time.Second, "event=handover.ended", "pid="+st.Get("pid"))
	adopted, _ := strconv.Atoi(end.Get("adopted"))
	aborted, _ := strconv.Atoi(end.Get("aborted"))
	byOld, byNew, closed := split(t, cs, old, child)
	t.Logf("of %d connections: %d committed before the kill live on, %d prepared and closed by the new generation, %d lost in all", len(cs), byNew, aborted, closed)
	if byOld != 0 || byNew != adopted || closed != len(cs)-adopted || aborted == 0 || adopted == 0 {
		t.Fatalf("%d served by the new generation, %d closed, %d by the dead one; it adopted %d, aborted %d", byNew, closed, byOld, adopted, aborted)
	}
}

// TestHandoverNewStalls: the new generation stops answering in the middle
// of a handover (its Check stalls past the 20th connection, in batches of 8,
// once a commit is in)
// without dying. After HandoverOptions.Timeout (2 s) with no answer the old
// generation aborts what is in flight and serves those connections on; what
// it committed before is the new generation's, served once it goes on (its
// Check returns when the old generation has exited). Every connection is
// answered once, by one of the two, its count intact.
func TestHandoverNewStalls(t *testing.T) {
	handoverBins(t)
	s := launchBin(t, faultBin, []string{"HOF_BATCH=8", "HOF_STALL_AFTER=20"}, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	cs := dialConns(t, s.addr, 100) // more than 8 batches of 8: see HOF_STALL_AFTER
	s.signal(syscall.SIGHUP)
	st := s.waitRecord(20*time.Second, "event=test.stalled")
	child, _ := strconv.Atoi(st.Get("pid"))
	if child <= 0 {
		t.Fatalf("no pid in %v", st)
	}
	s.seen[child] = true
	r := s.waitRecord(20*time.Second, "event=handover.aborted", "pid="+strconv.Itoa(old))
	if !strings.Contains(r.Get("err"), "answered nothing") {
		t.Fatalf("handover.aborted for another cause than the timeout: %v", r)
	}
	committed, aborted := handedOut(s, old, len(cs))
	if committed == 0 || aborted == 0 || committed+aborted != len(cs) {
		t.Fatalf("%d committed, %d aborted of %d connections: want some of each, all accounted for", committed, aborted, len(cs))
	}
	// The aborted ones are answered by the old generation at once; their
	// clients then close, so that it exits, and the new one goes on.
	type answer struct {
		pid int
		err error
	}
	answers := make(chan answer, len(cs))
	for _, c := range cs {
		go func() {
			p, _, err := c.trip("after")
			if err == nil && p == old {
				c.c.Close()
			}
			answers <- answer{p, err}
		}()
	}
	byOld, byNew := 0, 0
	deadline := time.After(30 * time.Second)
	for range cs {
		select {
		case a := <-answers:
			switch {
			case a.err != nil:
				t.Fatalf("a connection (answered by pid %d): %v; log:\n%s", a.pid, a.err, tail(s.log(), 30))
			case a.pid == old:
				byOld++
			case a.pid == child:
				byNew++
			default:
				t.Fatalf("answered by pid %d, neither %d nor %d", a.pid, old, child)
			}
		case <-deadline:
			t.Fatalf("%d answered by the old generation, %d by the new one, the rest not within 30 s; log:\n%s", byOld, byNew, tail(s.log(), 30))
		}
	}
	t.Logf("of %d connections: %d committed and served by the new generation once it went on, %d aborted after its silence and served on by the old one", len(cs), byNew, byOld)
	if byOld != aborted || byNew != committed {
		t.Fatalf("%d served by the old generation, %d by the new one; %d were aborted, %d committed", byOld, byNew, aborted, committed)
	}
}

// TestHandoverLoggedBeforeExit: a first generation that exits the moment its
// last connection is closed — here by the handover itself, which closes each
// committed connection, so the exit comes in the handover's own goroutine,
// the worst case of a program whose drain ends with its connections
// (Upgrader.Serve; examples/websocket) — has logged handover.committed for
// every connection it handed over: the records come before the closes. Every
// connection is served on by the new generation, its count intact.
func TestHandoverLoggedBeforeExit(t *testing.T) {
	handoverBins(t)
	const n = 20
	s := launchBin(t, faultBin, []string{"HOF_EXIT_AT_CLOSE=" + strconv.Itoa(n)}, nil, nil, "-log-format", "json", "-drain-timeout", "20s")
	old := s.waitPid(0, 10*time.Second)
	cs := dialConns(t, s.addr, n)
	s.signal(syscall.SIGHUP)
	pid := s.waitPid(old, 20*time.Second)
	s.waitExited(old, 20*time.Second)
	// It exited through the hook, at the last close: not after its Offers
	// returned.
	s.waitRecord(time.Second, "event=test.exit_at_close", "pid="+strconv.Itoa(old))
	committed := 0
	for _, r := range s.records() {
		if r.Match("event=handover.committed", "pid="+strconv.Itoa(old)) {
			c, _ := strconv.Atoi(r.Get("conns"))
			committed += c
		}
	}
	byOld, byNew, closed := split(t, cs, old, pid)
	t.Logf("of %d connections: %d in the old generation's handover.committed records, %d served on by the new one", n, committed, byNew)
	if byNew != n || byOld != 0 || closed != 0 {
		t.Fatalf("%d served by the new generation, %d by the old one, %d closed; want all %d by the new one", byNew, byOld, closed, n)
	}
	if committed != n {
		t.Fatalf("the old generation exited at its last close having logged %d of the %d connections it handed over; log:\n%s", committed, n, tail(s.log(), 30))
	}
	for _, c := range cs {
		c.c.Close()
	}
	s.stop()
}
