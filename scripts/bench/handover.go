package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The handover section: WebSocket clients (examples/websocket over ws://),
// each sending a message every --interval and checking its echo, through
// --releases SIGHUPs, once with the connections closed with 1001 and
// reconnected (-handover=false, today's way and the baseline), once
// handed over to the next generation (upgrader.Handover), and once under
// `handoff run --handover`, released with `handoff reload`, the connections
// relayed by handoff (package handover); the daemon row's handover time is
// handoff's, from its handover.relaying record to the last commit it passed
// on (handover.relayed's took_ms).
//
// The clients frame by hand (RFC 6455, masked text frames of a few bytes):
// the main module depends on no WebSocket library, and 10,000 of them on 2
// cores beside the server must be lean — one goroutine, two small buffers
// and no allocation per message.

// hoCase is one row of the section.
type hoCase struct {
	name     string
	label    string
	args     []string
	notYet   string // not measured: why
	handover bool
	daemon   bool // under handoff run --handover, released with handoff reload
}

func hoCases() []hoCase {
	return []hoCase{
		{name: "baseline", label: "close with 1001, clients reconnect (`-handover=false`)", args: []string{"-handover=false"}},
		{name: "library", label: "library handover (`upgrader.Handover`)", handover: true},
		{name: "daemon", label: "daemon mode (`handoff run --handover`, `handoff reload`)", handover: true, daemon: true},
	}
}

// hoRow is what one case measured.
type hoRow struct {
	c                   hoCase
	clients, releases   int
	closed, reconnects  int64
	lost, repeated      int64
	dialErrors          int64
	sent, echoed        int64
	gaps                []time.Duration // each client's longest gap between echoes
	quietGaps           []time.Duration // the same, before the first release
	answered            []time.Duration // SIGHUP → every client answered by the new generation
	moved               []int           // connections handed over, per release
	took                []time.Duration // the handover's time, per release, from the log
	cpu                 []time.Duration // the old generation's CPU time meanwhile
	rssBefore, rssAfter int
	err                 error
}

// checkHandover returns what is wrong with the handover section's flags,
// and how to fix it, or "".
func (cfg config) checkHandover() string {
	switch {
	case cfg.hoClients < 0:
		return fmt.Sprintf("--clients %d: give a number of WebSocket clients, 0 or more (0 skips the handover section)", cfg.hoClients)
	case cfg.hoReleases < 1:
		return fmt.Sprintf("--releases %d: give at least 1 release", cfg.hoReleases)
	case cfg.hoInterval <= 0:
		return fmt.Sprintf("--interval %v: give a positive interval between a client's messages, such as 200ms", cfg.hoInterval)
	case !knownModes(cfg.hoModes):
		return fmt.Sprintf("--modes %s: give some of baseline, library, daemon, comma-separated", strings.Join(cfg.hoModes, ","))
	case cfg.hoQuiet < 2*cfg.hoInterval:
		return fmt.Sprintf("--quiet %v: give at least two intervals (%v), such as 10s", cfg.hoQuiet, 2*cfg.hoInterval)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(cfg.hoClients)+64 > lim.Max {
		return fmt.Sprintf("--clients %d: the hard RLIMIT_NOFILE is %d, too few descriptors for the clients; raise it (ulimit -Hn, as root) or give fewer clients", cfg.hoClients, lim.Max)
	}
	return ""
}

// knownModes reports whether every name in modes is a handover case's.
func knownModes(modes []string) bool {
	for _, m := range modes {
		found := false
		for _, c := range hoCases() {
			found = found || c.name == m
		}
		if !found {
			return false
		}
	}
	return true
}

// printHandover runs each case and prints the table.
func printHandover(w io.Writer, e *env, cfg config) {
	fmt.Fprintf(w, "\nWebSocket connections across releases — %d clients, each a message every %v and its echo checked, %d releases (SIGHUP; `handoff reload` in daemon mode), examples/websocket over ws://:\n\n",
		cfg.hoClients, cfg.hoInterval, cfg.hoReleases)
	fmt.Fprintf(w, "The longest gap between echoes is measured twice per client: through the releases, and for %v before the first with no release (the same clients and server, to compare with: on a machine the clients saturate, the gap is long without any release).\n\n", cfg.hoQuiet)
	fmt.Fprintln(w, "| mode | closed by the server | reconnects | messages lost / repeated | longest gap between echoes, per client: p50 / p99 / max | SIGHUP or reload → every client answered by the new generation: p50 / max | connections handed over per release, in: p50 / max | serving generation's RSS: before → after | longest gap without a release: p50 / p99 / max |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, c := range hoCases() {
		if len(cfg.hoModes) > 0 && !contains(cfg.hoModes, c.name) {
			continue
		}
		if c.notYet != "" {
			fmt.Fprintf(w, "| %s | %s | | | | | | | |\n", c.label, c.notYet)
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: handover, %s…\n", c.name)
		r := runHandover(e, cfg, c)
		if r.err != nil {
			fmt.Fprintf(w, "| %s | stopped: %v | | | | | | | |\n", c.label, r.err)
			continue
		}
		handed := "–"
		if c.handover {
			handed = fmt.Sprintf("%d of %d in %s / %s (CPU of the old generation: %s / %s)", minInt(r.moved), r.clients, ms(pct(r.took, 50)), ms(pct(r.took, 100)), ms(pct(r.cpu, 50)), ms(pct(r.cpu, 100)))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d / %d | %s / %s / %s | %s / %s | %s | %.1f → %.1f MiB | %s / %s / %s |\n", c.label,
			r.closed, r.reconnects, r.lost, r.repeated,
			ms(pct(r.gaps, 50)), ms(pct(r.gaps, 99)), ms(pct(r.gaps, 100)),
			ms(pct(r.answered, 50)), ms(pct(r.answered, 100)), handed,
			float64(r.rssBefore)/1024, float64(r.rssAfter)/1024,
			ms(pct(r.quietGaps, 50)), ms(pct(r.quietGaps, 99)), ms(pct(r.quietGaps, 100)))
		fmt.Fprintf(w, "|   | (%d messages sent, %d echoed, %d failed dials) | | | | | | | |\n", r.sent, r.echoed, r.dialErrors)
	}
}

func minInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

// runHandover runs one case: start the server, connect every client, wait
// until each is answered, then release after release wait until every
// client is answered by the new generation and the old one has exited.
func runHandover(e *env, cfg config, c hoCase) hoRow {
	r := hoRow{c: c, clients: cfg.hoClients}
	b := &base{e: e, dir: mustTemp(e.dir, "handover-"+c.name), address: freeAddr()}
	b.pidfile = filepath.Join(b.dir, "pid")
	s := &signalled{base: b, bin: e.bins["websocket"]}
	d := &daemonServer{base: b}
	var pid int
	var err error
	if c.daemon {
		// handoff's records and the program's, both JSON, in one log.
		d.cmd, err = b.launch(e.bins["handoff"], "run", "--handover", "--control", d.control(), "--drain-timeout", "60s",
			"--log-format", "json", "--listen", b.address, "--", s.bin, "-log-format", "json")
		if err == nil {
			defer s.stop()
			pid, err = d.newServing(0, 10*time.Second)
		}
	} else {
		args := append([]string{"-addr", b.address, "-pidfile", b.pidfile, "-log-format", "json"}, c.args...)
		if _, err = b.launch(s.bin, args...); err == nil {
			defer s.stop()
			pid, err = b.waitPid(0, 10*time.Second)
		}
	}
	if err != nil {
		r.err = err
		return r
	}
	st := &hoStats{interval: cfg.hoInterval}
	clients := make([]*wsClient, cfg.hoClients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	dials := make(chan struct{}, 64) // connections being opened at once
	for i := range clients {
		clients[i] = &wsClient{id: i, addr: b.address, st: st, stop: stop, dials: dials}
		wg.Add(1)
		go func() { defer wg.Done(); clients[i].run() }()
	}
	defer func() {
		close(stop)
		for _, cl := range clients {
			cl.wake()
		}
		wg.Wait()
	}()
	answeredBy := func(pid int, timeout time.Duration) error {
		deadline := time.Now().Add(timeout)
		for _, cl := range clients {
			for int(cl.pid.Load()) != pid {
				if time.Now().After(deadline) {
					return fmt.Errorf("client %d not answered by pid %d within %v (last by %d); the server's log ends: %s", cl.id, pid, timeout, cl.pid.Load(), lastLines(filepath.Join(b.dir, "log"), 3))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return nil
	}
	if err := answeredBy(pid, 2*time.Minute); err != nil {
		r.err = err
		return r
	}
	// Gaps count from here, once every client is connected and answered:
	// first without a release, then through the releases.
	st.begin.Store(time.Now().UnixNano())
	time.Sleep(cfg.hoQuiet)
	for _, cl := range clients {
		r.quietGaps = append(r.quietGaps, time.Duration(cl.maxGap.Swap(0)))
	}
	r.rssBefore = rssKB(pid)
	// Each client's longest gap through all releases, and through each:
	// the first release after a boot can be slower than the rest (the
	// machine's memory is touched for the first time).
	gaps := make([]time.Duration, len(clients))
	for i := 0; i < cfg.hoReleases; i++ {
		logAt := fileSize(filepath.Join(b.dir, "log"))
		start := time.Now()
		old := pid
		if c.daemon {
			if out, err := exec.Command(e.bins["handoff"], "reload", "--control", d.control()).CombinedOutput(); err != nil {
				r.err = fmt.Errorf("release %d: handoff reload: %v: %s", i+1, err, out)
				return r
			}
			pid, err = d.newServing(old, time.Minute)
		} else {
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				r.err = err
				return r
			}
			pid, err = b.waitPid(old, time.Minute)
		}
		if err != nil {
			r.err = err
			return r
		}
		if err := answeredBy(pid, time.Minute); err != nil {
			r.err = err
			return r
		}
		r.answered = append(r.answered, time.Since(start))
		fmt.Fprintf(os.Stderr, "bench: handover, %s: release %d: every client answered by pid %d after %s\n", c.name, i+1, pid, ms(time.Since(start)))
		for deadline := time.Now().Add(time.Minute); alive(old); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				r.err = fmt.Errorf("release %d: the old generation, pid %d, has not exited a minute after SIGHUP", i+1, old)
				return r
			}
		}
		if c.handover {
			count := handedOver
			if c.daemon {
				count = relayed
			}
			n, took, cpu := count(readRecords(filepath.Join(b.dir, "log"), logAt), old)
			r.moved = append(r.moved, n)
			r.took = append(r.took, took)
			r.cpu = append(r.cpu, cpu)
			fmt.Fprintf(os.Stderr, "bench: handover, %s: release %d: %d of %d connections handed over from pid %d in %s (its CPU %s), by the log\n", c.name, i+1, n, cfg.hoClients, old, ms(took), ms(cpu))
		}
		time.Sleep(2 * cfg.hoInterval) // a few messages with the new generation alone
		this := make([]time.Duration, len(clients))
		for j, cl := range clients {
			this[j] = time.Duration(cl.maxGap.Swap(0))
			gaps[j] = max(gaps[j], this[j])
		}
		fmt.Fprintf(os.Stderr, "bench: handover, %s: release %d: longest gap between echoes p50 %s, p99 %s, max %s\n", c.name, i+1, ms(pct(this, 50)), ms(pct(this, 99)), ms(pct(this, 100)))
	}
	r.rssAfter = rssKB(pid)
	st.end.Store(time.Now().UnixNano())
	r.closed, r.reconnects, r.lost, r.repeated = st.closed.Load(), st.reconnects.Load(), st.lost.Load(), st.repeated.Load()
	r.sent, r.echoed, r.dialErrors = st.sent.Load(), st.echoed.Load(), st.dialErrors.Load()
	for j, cl := range clients {
		r.gaps = append(r.gaps, max(gaps[j], time.Duration(cl.maxGap.Load())))
	}
	r.releases = cfg.hoReleases
	return r
}

// newServing waits until handoff's serving generation is a live process
// other than old, and returns its pid.
func (d *daemonServer) newServing(old int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := d.serving()
		if err == nil && p != old && alive(p) {
			return p, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("handoff serves no process other than %d after %v (%v); see %s", old, timeout, err, filepath.Join(d.dir, "log"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lastLines returns the last n lines of the file at path, joined by " ⏎ ".
func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " ⏎ ")
}

// handedOver sums pid's handover.committed records: the connections it
// handed over, the time from the first batch to the last commit, and the
// CPU time it used meanwhile.
func handedOver(recs []map[string]any, pid int) (int, time.Duration, time.Duration) {
	n := 0
	var cpu time.Duration
	var first, last time.Time
	for _, rec := range recs {
		if rec["event"] != "handover.committed" {
			continue
		}
		if p, _ := rec["pid"].(float64); int(p) != pid {
			continue
		}
		c, _ := rec["conns"].(float64)
		tookMs, _ := rec["took_ms"].(float64)
		s, _ := rec["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			continue
		}
		n += int(c)
		cpuMs, _ := rec["cpu_ms"].(float64)
		cpu += time.Duration(cpuMs * float64(time.Millisecond))
		from := at.Add(-time.Duration(tookMs * float64(time.Millisecond)))
		if first.IsZero() || from.Before(first) {
			first = from
		}
		if at.After(last) {
			last = at
		}
	}
	return n, last.Sub(first), cpu
}

// relayed reads handoff's record of the relay from the process pid
// (handover.relayed): the connections it relayed (handed_over) and the time
// from handover.relaying to the last commit (took_ms, 0 if none moved); and
// the CPU time the old process's own handover.committed records say it
// used. The bench builds handoff from this tree, so the record has both.
func relayed(recs []map[string]any, pid int) (int, time.Duration, time.Duration) {
	n := 0
	var cpu, took time.Duration
	for _, rec := range recs {
		switch rec["event"] {
		case "handover.relayed":
			if p, _ := rec["gen_pid"].(float64); int(p) != pid {
				continue
			}
			h, _ := rec["handed_over"].(float64)
			ms, _ := rec["took_ms"].(float64)
			n, took = int(h), time.Duration(ms*float64(time.Millisecond))
		case "handover.committed":
			if p, ok := rec["pid"].(float64); ok && int(p) != pid {
				continue
			}
			cpuMs, _ := rec["cpu_ms"].(float64)
			cpu += time.Duration(cpuMs * float64(time.Millisecond))
		}
	}
	return n, took, cpu
}

// hoStats are the counts every client adds to.
type hoStats struct {
	interval                 time.Duration
	begin, end               atomic.Int64 // UnixNano: gaps are measured between them
	closed, reconnects       atomic.Int64
	lost, repeated           atomic.Int64
	sent, echoed, dialErrors atomic.Int64
}

// wsClient is one WebSocket client: it sends "ID SEQ" every interval and
// waits for the echo "pid=PID ID SEQ"; a message whose echo does not come
// (the server closed, or 10 s passed) is lost and sent again on a new
// connection.
type wsClient struct {
	id     int
	addr   string
	st     *hoStats
	stop   chan struct{}
	dials  chan struct{}
	pid    atomic.Int64 // the pid of the last echo
	maxGap atomic.Int64

	c       net.Conn
	cur     atomic.Pointer[net.TCPConn] // c, for wake from another goroutine
	r       *bufio.Reader
	mask    [4]byte
	out     []byte
	payload []byte
	timer   *time.Timer
}

var errServerClosed = errors.New("the server closed the connection")

// wake ends a wait for an echo, once stop is closed.
func (cl *wsClient) wake() {
	if c := cl.cur.Load(); c != nil {
		_ = c.SetDeadline(time.Now())
	}
}

func (cl *wsClient) stopped() bool {
	select {
	case <-cl.stop:
		return true
	default:
		return false
	}
}

func (cl *wsClient) run() {
	m := rand.Uint32()
	cl.mask = [4]byte{byte(m), byte(m >> 8), byte(m >> 16), byte(m >> 24)}
	cl.out = make([]byte, 0, 64)
	cl.payload = make([]byte, 0, 48)
	cl.timer = time.NewTimer(time.Hour)
	cl.timer.Stop()
	defer func() {
		if cl.c != nil {
			cl.c.Close()
		}
	}()
	if !cl.connect(false) {
		return
	}
	interval := cl.st.interval
	next := time.Now().Add(time.Duration(rand.Int64N(int64(interval))))
	var lastEcho time.Time
	for seq := uint64(0); ; {
		if d := time.Until(next); d > 0 {
			cl.timer.Reset(d)
			select {
			case <-cl.timer.C:
			case <-cl.stop:
				return
			}
		}
		if cl.stopped() {
			return
		}
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now // late (the echo came late): send now, then on time
		}
		pid, err := cl.trip(seq)
		if err != nil {
			if cl.stopped() {
				return
			}
			cl.st.lost.Add(1) // its echo never came; sent again below
			if errors.Is(err, errServerClosed) {
				cl.st.closed.Add(1)
			}
			cl.c.Close()
			cl.c = nil
			if !cl.connect(true) {
				return
			}
			continue // the same seq, on the new connection
		}
		now := time.Now()
		cl.st.echoed.Add(1)
		if b := cl.st.begin.Load(); b != 0 && !lastEcho.IsZero() && lastEcho.UnixNano() >= b {
			if e := cl.st.end.Load(); e == 0 || now.UnixNano() <= e {
				// A compare-and-swap, so that the quiet window's
				// Swap(0) is not undone by a gap it already read.
				for g := int64(now.Sub(lastEcho)); ; {
					m := cl.maxGap.Load()
					if g <= m || cl.maxGap.CompareAndSwap(m, g) {
						break
					}
				}
			}
		}
		lastEcho = now
		cl.pid.Store(int64(pid))
		seq++
	}
}

// connect dials and upgrades until it succeeds or the run stops.
func (cl *wsClient) connect(again bool) bool {
	for !cl.stopped() {
		cl.dials <- struct{}{}
		c, err := net.DialTimeout("tcp", cl.addr, 10*time.Second)
		if err == nil {
			err = cl.upgrade(c)
			if err != nil {
				c.Close()
			}
		}
		<-cl.dials
		if err == nil {
			cl.c = c
			cl.cur.Store(c.(*net.TCPConn))
			if again {
				cl.st.reconnects.Add(1)
			}
			return true
		}
		cl.st.dialErrors.Add(1)
		select {
		case <-cl.stop:
		case <-time.After(50 * time.Millisecond): // a refused dial: try again
		}
	}
	return false
}

const wsHandshake = "GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func (cl *wsClient) upgrade(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, wsHandshake); err != nil {
		return err
	}
	if cl.r == nil {
		cl.r = bufio.NewReaderSize(c, 256)
	} else {
		cl.r.Reset(c)
	}
	status, err := cl.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.Contains(status, []byte(" 101 ")) {
		return fmt.Errorf("upgrade answered %q", status)
	}
	for {
		line, err := cl.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// trip sends message seq and reads its echo; it returns the pid that
// echoed. errServerClosed: a close frame, EOF or a reset.
func (cl *wsClient) trip(seq uint64) (int, error) {
	p := strconv.AppendInt(cl.payload[:0], int64(cl.id), 10)
	p = append(p, ' ')
	p = strconv.AppendUint(p, seq, 10)
	cl.payload = p
	out := append(cl.out[:0], 0x81, 0x80|byte(len(p)))
	out = append(out, cl.mask[:]...)
	for i, x := range p {
		out = append(out, x^cl.mask[i%4])
	}
	cl.out = out
	_ = cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	cl.st.sent.Add(1)
	if _, err := cl.c.Write(out); err != nil {
		return 0, closedErr(err)
	}
	for {
		h, err := cl.r.Peek(2)
		if err != nil {
			return 0, closedErr(err)
		}
		op, l := h[0]&0x0f, int(h[1]&0x7f)
		if l >= 126 {
			return 0, fmt.Errorf("frame of %d bytes from the server: only short frames are expected", l)
		}
		_, _ = cl.r.Discard(2)
		body, err := cl.r.Peek(l)
		if err != nil {
			return 0, closedErr(err)
		}
		switch op {
		case 8:
			return 0, errServerClosed
		case 1, 2:
		default:
			_, _ = cl.r.Discard(l)
			continue
		}
		// "pid=PID ID SEQ"
		rest, ok := bytes.CutPrefix(body, []byte("pid="))
		sp := bytes.IndexByte(rest, ' ')
		if !ok || sp < 0 {
			return 0, fmt.Errorf("echo %q", body)
		}
		pid, _ := strconv.Atoi(string(rest[:sp])) // no allocation: the conversion is only read
		if !bytes.Equal(rest[sp+1:], p) {
			cl.st.repeated.Add(1) // an echo of another message: repeated or out of order
			_, _ = cl.r.Discard(l)
			continue
		}
		_, _ = cl.r.Discard(l)
		return pid, nil
	}
}

// closedErr tells the server's close (EOF, reset) from other errors.
func closedErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %v", errServerClosed, err)
	}
	return err
}
