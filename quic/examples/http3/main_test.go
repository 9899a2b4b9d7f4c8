package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// needBPF skips where this process may not create BPF maps (not root).
func needBPF(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("spawns servers")
	}
	_ = rlimit.RemoveMemlock()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Skipf("the steering needs BPF, which this process may not use (run the tests as root): %v", err)
	}
	m.Close()
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// server is the example running as a test's child.
type server struct {
	t       *testing.T
	dir     string
	addr    string
	pidfile string
	log     string
	pids    []int
}

func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "http3-example")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "http3")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	s := &server{t: t, dir: t.TempDir()}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	pc.Close()
	s.pidfile = filepath.Join(s.dir, "pid")
	s.log = filepath.Join(s.dir, "log")
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, append([]string{"-addr", s.addr, "-pidfile", s.pidfile}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	t.Cleanup(func() {
		for _, p := range s.pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("server log:\n%s", b)
		}
	})
	s.pids = append(s.pids, s.waitPid(0))
	return s
}

func (s *server) readPid() int {
	b, _ := os.ReadFile(s.pidfile)
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

// waitPid waits, within 15 s, until the pid file names a pid other than old.
func (s *server) waitPid(old int) int {
	s.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if p := s.readPid(); p != 0 && p != old {
			return p
		}
	}
	s.t.Fatalf("pid file still %d after 15 s", old)
	return 0
}

// upgrade sends SIGHUP to the serving generation and waits for the next.
func (s *server) upgrade() int {
	s.t.Helper()
	old := s.pids[len(s.pids)-1]
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		s.t.Fatal(err)
	}
	p := s.waitPid(old)
	s.pids = append(s.pids, p)
	return p
}

// waitLog waits, within 15 s, for n lines of the log with event=ev.
func (s *server) waitLog(ev string, n int) {
	s.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s.countLog(ev) >= n {
			return
		}
	}
	s.t.Fatalf("the log has %d lines event=%s after 15 s, want %d", s.countLog(ev), ev, n)
}

func (s *server) countLog(ev string) int {
	f, err := os.Open(s.log)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), " event="+ev+" ") || strings.HasSuffix(sc.Text(), " event="+ev) {
			n++
		}
	}
	return n
}

// load is a set of HTTP/3 clients, each on its own QUIC connection (a
// Transport of its own), sending a POST every 100 ms.
type load struct {
	ok, failed, dials, broken, graceful atomic.Int64
	clientRaces                         atomic.Int64 // see closedItself
	mu                                  sync.Mutex
	errs                                []string
	pids                                map[string]int
	stop                                chan struct{}
	wg                                  sync.WaitGroup
	stopped                             atomic.Bool
}

func startLoad(t *testing.T, addr string, clients int) *load {
	l := &load{stop: make(chan struct{}), pids: map[string]int{}}
	for i := range clients {
		l.wg.Add(1)
		go l.client(i, addr)
	}
	return l
}

func (l *load) client(i int, addr string) {
	defer l.wg.Done()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
		QUICConfig:      &quicgo.Config{MaxIdleTimeout: 3 * time.Second, KeepAlivePeriod: 500 * time.Millisecond},
		Dial: func(ctx context.Context, a string, tlsConf *tls.Config, conf *quicgo.Config) (*quicgo.Conn, error) {
			c, err := quicgo.DialAddrEarly(ctx, a, tlsConf, conf)
			if err == nil {
				l.dials.Add(1)
				go l.watch(c)
			}
			return c, err
		},
	}
	defer tr.Close()
	client := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		resp, err := client.Post("https://"+addr+"/", "text/plain", bytes.NewReader([]byte(fmt.Sprintf("client %d", i))))
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && (resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "pid ")) {
				err = fmt.Errorf("status %d, body %q", resp.StatusCode, b)
			}
			if err == nil {
				l.ok.Add(1)
				l.mu.Lock()
				l.pids[strings.TrimSpace(string(b))]++
				l.mu.Unlock()
				continue
			}
		}
		if l.stopped.Load() {
			return
		}
		counter := &l.failed
		if closedItself(err) {
			counter = &l.clientRaces
		}
		counter.Add(1)
		l.mu.Lock()
		if len(l.errs) < 10 {
			l.errs = append(l.errs, fmt.Sprintf("client %d: %v", i, err))
		}
		l.mu.Unlock()
	}
}

// closedItself reports whether a request failed because its own client
// closed the connection with H3_NO_ERROR: quic-go v0.65.0's ClientConn,
// reading a GOAWAY on a connection with no request tracked, closes it at
// once (client.go, handleControlStream) — while a request that has opened
// its stream and passed the GOAWAY check is not tracked yet
// (openRequestStream, between that check and TrackStream). The server
// did nothing wrong: any GOAWAY can meet it, and it is counted apart, not
// as a failure (seen once in 1,353 requests through 3 reloads).
func closedItself(err error) bool {
	var he *http3.Error
	return errors.As(err, &he) && !he.Remote && he.ErrorCode == http3.ErrCodeNoError
}

// watch counts how c ended: gracefully (H3_NO_ERROR from either side, as
// after a GOAWAY), or broken (a timeout, a reset, any error) before the
// load stopped.
func (l *load) watch(c *quicgo.Conn) {
	<-c.Context().Done()
	if l.stopped.Load() {
		return
	}
	var ae *quicgo.ApplicationError
	if errors.As(context.Cause(c.Context()), &ae) && ae.ErrorCode == quicgo.ApplicationErrorCode(http3.ErrCodeNoError) {
		l.graceful.Add(1)
		return
	}
	l.broken.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("connection broken: %v", context.Cause(c.Context())))
	}
	l.mu.Unlock()
}

func (l *load) end() {
	l.stopped.Store(true)
	close(l.stop)
	l.wg.Wait()
}

func (l *load) String() string {
	return fmt.Sprintf("%d requests answered, %d failed, %d failed by their own client's close (closedItself); %d connections dialled, %d broken, %d ended gracefully; answered by %v; errors %q",
		l.ok.Load(), l.failed.Load(), l.clientRaces.Load(), l.dials.Load(), l.broken.Load(), l.graceful.Load(), l.pids, l.errs)
}

// waitAnswered waits, within 15 s, until n more requests were answered.
func (l *load) waitAnswered(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if l.ok.Load() >= target {
			return
		}
	}
	t.Fatalf("fewer than %d requests answered within 15 s: %v", n, l)
}

const (
	clients  = 30
	upgrades = 5
)

// throughUpgrades runs the load through upgrades of a server started with
// args, each once every client has had about 10 answers since the last.
func throughUpgrades(t *testing.T, args ...string) (*server, *load) {
	s := startServer(t, args...)
	l := startLoad(t, s.addr, clients)
	l.waitAnswered(t, clients*10)
	start := time.Now()
	for range upgrades {
		s.upgrade()
		l.waitAnswered(t, clients*10)
	}
	t.Logf("%d upgrades in %v", upgrades, time.Since(start).Round(time.Millisecond))
	// The last old generation's connections end after its GOAWAY.
	s.waitLog("h3.drained", upgrades)
	l.end()
	t.Logf("%s", l)
	return s, l
}

// TestNoConnectionBrokenThroughUpgrades: 30 HTTP/3 clients, each on its own
// QUIC connection, a POST every 100 ms, through 5 upgrades with steering: no
// request fails, no connection breaks (each old generation's end after its
// GOAWAY, and their clients dial the new one), and each old generation's
// drain ends with its connections, not at the deadline.
func TestNoConnectionBrokenThroughUpgrades(t *testing.T) {
	needBPF(t)
	s, l := throughUpgrades(t, "-drain", "10s")
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
	if l.dials.Load() < clients*(upgrades+1) {
		t.Errorf("%d connections dialled, want at least %d: the clients should follow each GOAWAY to the new generation", l.dials.Load(), clients*(upgrades+1))
	}
	if n := s.countLog("h3.drain_cut"); n != 0 {
		t.Errorf("%d drains cut at the deadline, want 0", n)
	}
	if len(l.pids) != upgrades+1 {
		t.Errorf("answered by %d generations, want %d", len(l.pids), upgrades+1)
	}
}

// TestSharedSocketBaseline is the control: the same load against today's
// shared socket (upgrader.ListenPacket, both generations reading it during
// the drain) breaks connections. It shows the load sees the breakage the
// steering prevents; it needs no privilege.
func TestSharedSocketBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns servers")
	}
	s := startServer(t, "-shared-socket", "-drain", "1s")
	l := startLoad(t, s.addr, clients)
	l.waitAnswered(t, clients*10)
	// Which packets reach the wrong generation is chance, and QUIC resends
	// a lost one: upgrade until something broke, up to baselineReloads.
	n := 0
	for n < baselineReloads && l.failed.Load()+l.broken.Load() == 0 {
		n++
		s.upgrade()
		l.waitAnswered(t, clients*5)
	}
	s.waitLog("exit", n)
	l.end()
	t.Logf("baseline, shared socket, %d upgrades: %s", n, l)
	if l.failed.Load()+l.broken.Load() == 0 {
		t.Errorf("the shared socket broke nothing through %d upgrades: the load no longer sees what the steering prevents", n)
	}
}

// baselineReloads is how many releases a control test tries at most before
// it concludes that a shared socket breaks nothing. One in a few CI runs saw
// nothing break in 3.
const baselineReloads = 12

// TestNewGenerationDiesBeforeReady: a release whose certificate does not
// load dies after binding its socket, before Ready; the old generation
// keeps every packet: no request fails, no connection breaks. Then a good
// release takes over, still without a failure.
func TestNewGenerationDiesBeforeReady(t *testing.T) {
	needBPF(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, cert, key)
	s := startServer(t, "-cert", cert, "-key", key, "-drain", "10s")
	l := startLoad(t, s.addr, clients)
	l.waitAnswered(t, clients*10)
	good, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := syscall.Kill(s.pids[0], syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		s.waitLog("quic.listening", 1+i) // it bound its socket in the group
		s.waitLog("upgrade.failed", i)
		l.waitAnswered(t, clients*5)
	}
	if p := s.readPid(); p != s.pids[0] {
		t.Fatalf("pid file names %d, want the first generation %d", p, s.pids[0])
	}
	if err := os.WriteFile(cert, good, 0o600); err != nil {
		t.Fatal(err)
	}
	s.upgrade()
	l.waitAnswered(t, clients*10)
	s.waitLog("h3.drained", 1)
	l.end()
	t.Logf("3 releases dead before ready, then 1 upgrade: %s", l)
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	conf, err := tlsConfig("127.0.0.1:0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := conf.Certificates[0]
	kd, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOldGenerationKilledMidDrain: an old generation killed with SIGKILL
// while it drains takes its connections with it (here 5 that stay open
// through the drain); the clients of the new generation see no failure.
func TestOldGenerationKilledMidDrain(t *testing.T) {
	needBPF(t)
	s := startServer(t, "-drain", "60s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Connections that do nothing but keep alive: they outlive the GOAWAY.
	var idle []*quicgo.Conn
	for range 5 {
		c, err := quicgo.DialAddr(ctx, s.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
			&quicgo.Config{KeepAlivePeriod: 200 * time.Millisecond, MaxIdleTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		idle = append(idle, c)
	}
	old := s.pids[0]
	s.upgrade()
	l := startLoad(t, s.addr, clients)
	l.waitAnswered(t, clients*10)
	for _, c := range idle {
		if c.Context().Err() != nil {
			t.Fatalf("an idle connection ended before the kill: %v", context.Cause(c.Context()))
		}
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	broken := 0
	for _, c := range idle {
		select {
		case <-c.Context().Done():
			broken++
		case <-ctx.Done():
			t.Fatalf("a connection of the killed generation still lives after 30 s")
		}
	}
	l.waitAnswered(t, clients*10)
	l.end()
	t.Logf("old generation killed mid-drain: %d of its %d connections lost; new generation's load: %s", broken, len(idle), l)
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke on the new generation, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
}
