//go:build linux

package upgrader_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
)

// keepClient is an HTTP/1.1 keep-alive client on one TCP connection of its
// own, which it never opens again: an answer proves the connection lived.
type keepClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialKeep(t *testing.T, addr string) *keepClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepClient{c: c, r: bufio.NewReader(c)}
}

// post sends one POST and returns the pid that answered, and whether the
// answer asked to close the connection.
func (k *keepClient) post() (pid int, closing bool, err error) {
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprint(k.c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping"); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return 0, false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	pid, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(body), "pid=")))
	return pid, resp.Close, nil
}

// releaseFigures is what releasesUnderLoad measured.
type releaseFigures struct {
	res        *loadcheck.Result
	drainMs    []int // each old generation's drain.done drain_ms
	handoverMs []int // each handover.committed took_ms
	moved      int   // drain.done moved, summed
	idleClosed int   // drain.done idle_closed, summed
	exitMs     []int // SIGHUP to the old generation's exit, as the test saw it
}

func (f releaseFigures) String() string {
	return fmt.Sprintf("failed %d (reused %d) retried %d of %d; moved %d, idle closed %d; drain ms %v; handover ms %v; SIGHUP to old exit ms %v",
		f.res.Failures(), f.res.FailedReused, f.res.Retried, f.res.Sent, f.moved, f.idleClosed, spread(f.drainMs), spread(f.handoverMs), spread(f.exitMs))
}

// spread is min/median/max.
func spread(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := append([]int(nil), v...)
	sort.Ints(s)
	return fmt.Sprintf("%d/%d/%d", s[0], s[len(s)/2], s[len(s)-1])
}

// releasesUnderLoad runs examples/httpserver (with -move-idle if moveIdle)
// under an open-loop POST load of rate requests a second, half of them on
// keep-alive connections, through releases SIGHUPs; after each, once the
// old generation has exited, it calls after with the new pid, and waits
// until the new generation has answered 30 requests of the load. It calls
// before once the first generation serves, end before the load ends.
func releasesUnderLoad(t *testing.T, moveIdle bool, releases, rate int, before func(s *server, pid int), after func(pid int), end func()) releaseFigures {
	t.Helper()
	args := []string{"-drain-timeout", "10s", "-idle-grace", "500ms"}
	if moveIdle {
		args = append(args, "-move-idle")
	}
	s := startServer(t, nil, args...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + s.addr, Rate: rate})
	if err := load.WaitAnswers(0, 40, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	pid := s.pid()
	if before != nil {
		before(s, pid)
	}
	var f releaseFigures
	for i := 0; i < releases; i++ {
		start := time.Now()
		old := s.signal(syscall.SIGHUP)
		pid = s.waitPid(old, 30*time.Second)
		s.waitExited(old, 20*time.Second)
		f.exitMs = append(f.exitMs, int(time.Since(start).Milliseconds()))
		if after != nil {
			after(pid)
		}
		if err := load.WaitAnswers(pid, load.Answers(pid)+30, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if end != nil {
		end()
	}
	cancel()
	f.res = load.Wait()
	for _, r := range s.records() {
		n := func(k string) int { v, _ := strconv.Atoi(r.Get(k)); return v }
		switch {
		case r.Match("event=drain.done"):
			f.drainMs = append(f.drainMs, n("drain_ms"))
			f.moved += n("moved")
			f.idleClosed += n("idle_closed")
		case r.Match("event=drain.cut"):
			t.Errorf("a drain was cut short: %v", r)
		case r.Match("event=handover.committed"):
			f.handoverMs = append(f.handoverMs, n("took_ms"))
		}
	}
	if len(f.drainMs) != releases {
		t.Errorf("%d drain.done records, want %d", len(f.drainMs), releases)
	}
	s.stop()
	return f
}

// TestMoveIdleUnderLoad: examples/httpserver -move-idle through 10 SIGHUPs
// under 200 POSTs a second (half on keep-alive connections). 10 keep-alive
// clients that sit idle across each release, and a Go client limited to one
// connection, are answered by each new generation on the same connection
// (same local port, never redialled); no POST of the load fails or is
// retried; every old generation moved at least those 10 and cut nothing.
func TestMoveIdleUnderLoad(t *testing.T) {
	spawns(t)
	releases := 10
	if n, err := strconv.Atoi(os.Getenv("HANDOFF_TEST_MOVE_IDLE_RELEASES")); err == nil && n > 0 {
		releases = n
	}
	var keeps []*keepClient
	var port string
	var dials atomic.Int32
	goClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	var addr string
	// goPost sends one POST with goClient and checks it went out on the
	// one connection, from the same local port.
	goPost := func(want int) {
		t.Helper()
		var local string
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { local = i.Conn.LocalAddr().String() }}
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader("ping"))
		resp, err := goClient.Do(req.WithContext(httptrace.WithClientTrace(context.Background(), trace)))
		if err != nil {
			t.Fatalf("the Go client: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if port == "" {
			port = local
		}
		if got := strings.TrimSpace(string(body)); got != "pid="+strconv.Itoa(want) || local != port || dials.Load() != 1 || resp.Close {
			t.Fatalf("the Go client: %q from %s (close %v) after %d dials; want pid=%d from %s, 1 dial", got, local, resp.Close, dials.Load(), want, port)
		}
	}
	check := func(pid int) {
		t.Helper()
		for i, k := range keeps {
			got, closing, err := k.post()
			if err != nil || got != pid || closing {
				t.Fatalf("keep-alive client %d (local %s): pid %d, close %v, %v; want pid %d on the same connection", i, k.c.LocalAddr(), got, closing, err, pid)
			}
		}
		goPost(pid)
	}
	f := releasesUnderLoad(t, true, releases, 200, func(s *server, pid int) {
		addr = s.addr
		for range 10 {
			keeps = append(keeps, dialKeep(t, s.addr))
		}
		check(pid)
	}, check, nil)
	t.Logf("move-idle, %d releases: %v", releases, f)
	if f.res.Failures() != 0 || f.res.Retried != 0 {
		t.Errorf("%d POSTs failed, %d retried: %v %q", f.res.Failures(), f.res.Retried, f.res.Failed, f.res.Samples)
	}
	if f.moved < releases*(len(keeps)+1) {
		t.Errorf("%d connections moved in all, want at least %d (the idle clients at each release)", f.moved, releases*(len(keeps)+1))
	}
	if len(f.res.Pids) != releases+1 {
		t.Errorf("%d pids answered, want %d: %v", len(f.res.Pids), releases+1, f.res.Pids)
	}
}

// TestMoveIdleOffDrains: without -move-idle, nothing moves: an idle
// keep-alive connection is closed by the old generation's drain (EOF, no
// answer lost: it sent nothing), as before.
func TestMoveIdleOffDrains(t *testing.T) {
	spawns(t)
	s := startServer(t, nil, "-drain-timeout", "10s", "-idle-grace", "300ms")
	old := s.pid()
	k := dialKeep(t, s.addr)
	if pid, _, err := k.post(); err != nil || pid != old {
		t.Fatalf("pid %d, %v", pid, err)
	}
	s.signal(syscall.SIGHUP)
	s.waitPid(old, 30*time.Second)
	s.waitExited(old, 20*time.Second)
	_ = k.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := k.r.ReadByte(); err != io.EOF {
		t.Fatalf("the idle connection: %q, %v; want EOF (closed by the drain)", b, err)
	}
	r := s.waitRecord(10*time.Second, "event=drain.done", "pid="+strconv.Itoa(old))
	if r.Get("moved") != "0" || r.Get("idle_closed") == "0" {
		t.Errorf("drain.done: %v; want moved=0, idle_closed at least 1", r)
	}
	s.stop()
}

// idleLoad is n keep-alive clients, each on one connection of its own,
// each sending a POST at random intervals of every/2 to 3*every/2 (open
// loop per client: the interval does not wait for the answer): the clients
// whose connection sits idle across a release, which the drain closes
// without MoveIdleConns.
type idleLoad struct {
	mu              sync.Mutex
	sent, ok        int
	failed, retried int
	samples         []string
	done            chan struct{}
}

func startIdleLoad(ctx context.Context, url string, n int, every time.Duration) *idleLoad {
	l := &idleLoad{done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			rng := rand.New(rand.NewPCG(uint64(i), 28))
			var inner sync.WaitGroup
			defer inner.Wait()
			for {
				wait := every/2 + time.Duration(rng.Int64N(int64(every)))
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				inner.Add(1)
				go func() {
					defer inner.Done()
					conns := 0
					trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns++ }}
					req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("ping"))
					resp, err := c.Do(req.WithContext(httptrace.WithClientTrace(context.Background(), trace)))
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("HTTP %d", resp.StatusCode)
						}
					}
					l.mu.Lock()
					defer l.mu.Unlock()
					l.sent++
					if conns > 1 {
						l.retried++
					}
					if err != nil {
						l.failed++
						if len(l.samples) < 5 {
							l.samples = append(l.samples, err.Error())
						}
						return
					}
					l.ok++
				}()
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

func (l *idleLoad) String() string {
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("idle clients: %d POSTs, %d failed, %d retried %q", l.sent, l.failed, l.retried, l.samples)
}

// TestMoveIdleCompare measures the same load through the same releases with
// and without -move-idle, for docs/library.md; it runs only with
// HANDOFF_TEST_MOVE_IDLE_COMPARE=N (N releases each, N*2 runs alternated
// in pairs if HANDOFF_TEST_MOVE_IDLE_ROUNDS is set).
func TestMoveIdleCompare(t *testing.T) {
	spawns(t)
	n, err := strconv.Atoi(os.Getenv("HANDOFF_TEST_MOVE_IDLE_COMPARE"))
	if err != nil || n <= 0 {
		t.Skip("a measurement: set HANDOFF_TEST_MOVE_IDLE_COMPARE=N to run N releases each way")
	}
	rounds := 1
	if r, err := strconv.Atoi(os.Getenv("HANDOFF_TEST_MOVE_IDLE_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	rate := 400
	if r, err := strconv.Atoi(os.Getenv("HANDOFF_TEST_MOVE_IDLE_RATE")); err == nil && r > 0 {
		rate = r
	}
	idle := 0 // idle clients, each a POST every 500 ms on average
	if r, err := strconv.Atoi(os.Getenv("HANDOFF_TEST_MOVE_IDLE_CLIENTS")); err == nil && r > 0 {
		idle = r
	}
	for r := 0; r < rounds; r++ {
		for _, move := range []bool{false, true} {
			var il *idleLoad
			ctx, cancel := context.WithCancel(context.Background())
			f := releasesUnderLoad(t, move, n, rate, func(s *server, _ int) {
				if idle > 0 {
					il = startIdleLoad(ctx, "http://"+s.addr+"/", idle, 500*time.Millisecond)
				}
			}, func(int) {
				if il != nil {
					// Each release waits for the idle clients' next
					// requests: the old generation drains them.
					time.Sleep(time.Second) // a pace between releases, not a wait
				}
			}, func() {
				cancel()
				if il != nil {
					<-il.done
				}
			})
			cancel()
			extra := ""
			if il != nil {
				extra = "; " + il.String()
			}
			t.Logf("round %d, move-idle %v, %d releases at %d POST/s: %v; samples %q%s", r+1, move, n, rate, f, f.res.Samples, extra)
		}
	}
}

// idleBin is testdata/idleserver, built at the first test that needs it.
var (
	idleBuild    sync.Once
	idleBin      string
	idleBuildErr error
)

func idleServerBin(t *testing.T) string {
	t.Helper()
	spawns(t)
	idleBuild.Do(func() {
		idleBin = filepath.Join(filepath.Dir(serverBin), "idleserver")
		if out, err := exec.Command("go", "build", "-o", idleBin, "./testdata/idleserver").CombinedOutput(); err != nil {
			idleBuildErr = fmt.Errorf("building testdata/idleserver: %v\n%s", err, out)
		}
	})
	if idleBuildErr != nil {
		t.Fatal(idleBuildErr)
	}
	return idleBin
}

// TestMoveIdleRefusedServedHere: the new generation runs with
// RLIMIT_NOFILE 40 and refuses the idle connections it has no descriptor
// for. Each of 60 idle keep-alive clients then sends one POST: the ones
// that moved are answered by the new generation on the same connection,
// kept open; the refused ones by the old generation, which kept them as a
// drain does (served, with "Connection: close"); each exactly once, none
// lost, as the old generation's handover records count them.
func TestMoveIdleRefusedServedHere(t *testing.T) {
	bin := idleServerBin(t)
	s := launchBin(t, bin, []string{"IDLE_NOFILE=40"}, nil, nil, "-log-format", "json", "-idle-grace", "20s", "-drain-timeout", "30s")
	old := s.waitPid(0, 10*time.Second)
	const n = 60
	keeps := make([]*keepClient, n)
	for i := range keeps {
		keeps[i] = dialKeep(t, s.addr)
		if pid, _, err := keeps[i].post(); err != nil || pid != old {
			t.Fatalf("client %d: pid %d, %v", i, pid, err)
		}
	}
	s.signal(syscall.SIGHUP)
	pid := s.waitPid(old, 30*time.Second)
	// The old generation's figures, once every connection was answered.
	var committed, refused int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		committed, refused = 0, 0
		for _, r := range s.records() {
			c, _ := strconv.Atoi(r.Get("conns"))
			switch {
			case r.Match("event=handover.committed", "pid="+strconv.Itoa(old)):
				committed += c
			case r.Match("event=handover.refused", "pid="+strconv.Itoa(old)):
				refused += c
			}
		}
		if committed+refused == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old generation logged %d committed and %d refused of %d; log:\n%s", committed, refused, n, tail(s.log(), 30))
		}
	}
	byOld, byNew := 0, 0
	for i, k := range keeps {
		got, closing, err := k.post()
		switch {
		case err != nil:
			t.Fatalf("client %d: %v", i, err)
		case got == pid && !closing:
			byNew++
		case got == old && closing:
			byOld++
		default:
			t.Fatalf("client %d: answered by pid %d (close %v); want the new %d kept open or the old %d closing", i, got, closing, pid, old)
		}
	}
	t.Logf("of %d idle connections: %d moved and answered by the new generation, %d refused and served by the old one with Connection: close", n, byNew, byOld)
	if byNew != committed || byOld != refused || byNew == 0 || byOld == 0 {
		t.Fatalf("%d answered by the new generation, %d by the old; %d committed, %d refused: want those, some of each", byNew, byOld, committed, refused)
	}
	s.waitExited(old, 20*time.Second)
	for _, k := range keeps {
		k.c.Close()
	}
	s.stop()
}
