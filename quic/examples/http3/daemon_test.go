package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The example under handoff run --listen quic://: the daemon binds each
// generation's socket and steers; the program takes it with quic.Listen,
// unchanged. handoff is built from the main module (../../..).

var (
	handoffOnce sync.Once
	handoffBin  string
	handoffErr  error
)

// buildDaemon builds handoff and the example, once, into a directory any
// user may read (TestDaemonWithoutPrivileges runs them as nobody).
func buildDaemon(t *testing.T) (handoff, example string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and spawns handoff")
	}
	handoffOnce.Do(func() {
		dir, err := os.MkdirTemp("", "http3-daemon")
		if err != nil {
			handoffErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			handoffErr = err
			return
		}
		handoffBin = filepath.Join(dir, "handoff")
		cmd := exec.Command("go", "build", "-o", handoffBin, ".")
		cmd.Dir = "../../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			handoffErr = fmt.Errorf("building handoff: %v\n%s", err, out)
			return
		}
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "http3"), ".").CombinedOutput(); err != nil {
			handoffErr = fmt.Errorf("building the example: %v\n%s", err, out)
		}
	})
	if handoffErr != nil {
		t.Fatal(handoffErr)
	}
	return handoffBin, filepath.Join(filepath.Dir(handoffBin), "http3")
}

// daemon is handoff run serving the example; its server's log is handoff's
// output, the program's lines among handoff's.
type daemon struct {
	*server
	handoff string
	ctl     string
	exited  chan struct{}
	cmd     *exec.Cmd
}

func startDaemon(t *testing.T, progArgs ...string) *daemon {
	t.Helper()
	return startDaemonOn(t, "quic", progArgs...)
}

// startDaemonOn starts handoff run with --listen h3=SCHEME://ADDR.
func startDaemonOn(t *testing.T, scheme string, progArgs ...string) *daemon {
	t.Helper()
	handoff, example := buildDaemon(t)
	s := &server{t: t, dir: t.TempDir()}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	pc.Close()
	s.log = filepath.Join(s.dir, "log")
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d := &daemon{server: s, handoff: handoff, ctl: filepath.Join(s.dir, "ctl.sock"), exited: make(chan struct{})}
	args := []string{"run", "--control", d.ctl, "--listen", "h3=" + scheme + "://" + s.addr, "--drain-timeout", "60s", "--max-draining", "5", "--",
		example, "-addr", s.addr}
	d.cmd = exec.Command(handoff, append(args, progArgs...)...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			_ = d.cmd.Process.Kill()
			t.Errorf("handoff did not exit within 30 s of SIGTERM")
		}
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("handoff's log:\n%s", b)
		}
	})
	if scheme == "quic" {
		s.waitLog("quic.steered", 1)
	} else {
		s.waitLog("generation.ready", 1)
	}
	return d
}

// reload runs handoff reload, which returns once the new generation is
// ready or has failed; its error says why.
func (d *daemon) reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.handoff, "reload", "--control", d.ctl).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// stop stops handoff with SIGTERM and waits, within 30 s, for its exit.
func (d *daemon) stop() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("handoff did not exit within 30 s of SIGTERM")
	}
}

var steeredRE = regexp.MustCompile(`event=quic\.steered gen=(\d+) gen_pid=(\d+)`)

// steeredPids returns the pids of the generations handoff steered to, in
// order.
func (d *daemon) steeredPids() []int {
	b, _ := os.ReadFile(d.log)
	var pids []int
	for _, m := range steeredRE.FindAllStringSubmatch(string(b), -1) {
		p, _ := strconv.Atoi(m[2])
		pids = append(pids, p)
	}
	return pids
}

// lastCount returns the value of key in the last quic.left record.
func (d *daemon) lastCount(key string) (uint64, bool) {
	b, _ := os.ReadFile(d.log)
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " event=quic.left ") {
			line = l
		}
	}
	m := regexp.MustCompile(` ` + key + `=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	return n, err == nil
}

const daemonReloads = 3

// TestDaemonReloads: 30 HTTP/3 clients, each on its own QUIC connection, a
// POST every 100 ms, through 3 handoff reloads: no request fails, no
// connection breaks, 4 generations answer. Short and malformed datagrams
// sent meanwhile are dropped by the steering and counted.
func TestDaemonReloads(t *testing.T) {
	needBPF(t)
	d := startDaemon(t, "-drain", "10s")
	l := startLoad(t, d.addr, clients)
	l.waitAnswered(t, clients*10)
	// Unconnected: a datagram the steering drops makes the kernel answer
	// ICMP port unreachable, which a connected socket would report on its
	// next write, unsent.
	junk, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	to, err := net.ResolveUDPAddr("udp4", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	const junkN = 100
	start := time.Now()
	for i := range daemonReloads {
		for j := range junkN / daemonReloads {
			if _, err := junk.WriteToUDP([]byte{0x40, byte(i), byte(j)}, to); err != nil { // a short header, far too short
				t.Fatal(err)
			}
		}
		if err := d.reload(); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		l.waitAnswered(t, clients*10)
	}
	t.Logf("%d reloads in %v", daemonReloads, time.Since(start).Round(time.Millisecond))
	d.waitLog("h3.drained", daemonReloads)
	// The serving generation's socket is still non-blocking, as every
	// socket handoff passes (a blocking one hangs a Go program's Close).
	pids := d.steeredPids()
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", pids[len(pids)-1]))
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	if _, err := fmt.Sscanf(strings.SplitN(string(info), "flags:", 2)[1], "%o", &flags); err != nil || flags&syscall.O_NONBLOCK == 0 {
		t.Errorf("the serving generation's fd 3 has flags %o (%v), want O_NONBLOCK", flags, err)
	}
	l.end()
	t.Logf("%s", l)
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
	if len(l.pids) != daemonReloads+1 {
		t.Errorf("answered by %d generations, want %d", len(l.pids), daemonReloads+1)
	}
	if n := d.countLog("h3.drain_cut"); n != 0 {
		t.Errorf("%d drains cut at the deadline, want 0", n)
	}
	d.stop()
	malformed, ok := d.lastCount("malformed")
	sent := uint64(junkN / daemonReloads * daemonReloads)
	if !ok || malformed < sent {
		t.Errorf("the steering counted %d malformed datagrams (found: %v), want at least the %d sent", malformed, ok, sent)
	}
	byCookie, _ := d.lastCount("by_cookie")
	t.Logf("steering's counts at the stop: %d by cookie, %d malformed", byCookie, malformed)
}

// TestDaemonSharedUDPBaseline is the control: the same load through the
// same reloads on a udp:// socket, shared by every generation, breaks QUIC
// connections (the old generation reads packets of the new one's, and the
// reverse, while it drains). It shows that TestDaemonReloads's load sees
// what quic:// prevents; it needs no privilege.
func TestDaemonSharedUDPBaseline(t *testing.T) {
	d := startDaemonOn(t, "udp", "-shared-socket", "-drain", "1s")
	l := startLoad(t, d.addr, clients)
	l.waitAnswered(t, clients*10)
	// Which packets reach the wrong generation is chance, and QUIC resends
	// a lost one: reload until something broke, up to baselineReloads.
	n := 0
	for n < baselineReloads && l.failed.Load()+l.broken.Load() == 0 {
		n++
		if err := d.reload(); err != nil {
			t.Fatalf("reload %d: %v", n, err)
		}
		l.waitAnswered(t, clients*5)
	}
	d.waitLog("generation.exited", n)
	l.end()
	t.Logf("baseline, udp:// shared socket, %d reloads: %s", n, l)
	if l.failed.Load()+l.broken.Load() == 0 {
		t.Errorf("the shared udp:// socket broke nothing through %d reloads: the load no longer sees what quic:// prevents", n)
	}
}

// TestDaemonNewGenerationDiesBeforeReady: a release whose certificate does
// not load dies after handoff gave it its socket, before READY=1; the
// reload fails and the serving generation keeps every packet: no request
// fails, no connection breaks. Then a good release takes over.
func TestDaemonNewGenerationDiesBeforeReady(t *testing.T) {
	needBPF(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, cert, key)
	d := startDaemon(t, "-cert", cert, "-key", key, "-drain", "10s")
	l := startLoad(t, d.addr, clients)
	l.waitAnswered(t, clients*10)
	good, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := d.reload(); err == nil {
			t.Fatalf("reload %d with a broken certificate succeeded", i)
		}
		d.waitLog("quic.listening", 2+i) // handoff's, the first generation's and this one's: it took its socket
		l.waitAnswered(t, clients*5)
	}
	if n := len(d.steeredPids()); n != 1 {
		t.Fatalf("handoff steered to %d generations, want 1: a generation that died before ready got its socket steered", n)
	}
	if err := os.WriteFile(cert, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	l.waitAnswered(t, clients*10)
	d.waitLog("h3.drained", 1)
	l.end()
	t.Logf("3 releases dead before ready, then 1 reload: %s", l)
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
	if len(l.pids) != 2 {
		t.Errorf("answered by %d generations, want 2", len(l.pids))
	}
}

// TestDaemonOldGenerationKilledMidDrain: an old generation killed with
// SIGKILL while it drains takes its connections with it (5 that stay open
// through the drain); the new generation's clients see no failure, and
// handoff serves on.
func TestDaemonOldGenerationKilledMidDrain(t *testing.T) {
	needBPF(t)
	d := startDaemon(t, "-drain", "60s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var idle []*quicgo.Conn
	for range 5 {
		c, err := quicgo.DialAddr(ctx, d.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
			&quicgo.Config{KeepAlivePeriod: 200 * time.Millisecond, MaxIdleTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		idle = append(idle, c)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, d.addr, clients)
	l.waitAnswered(t, clients*10)
	for _, c := range idle {
		if c.Context().Err() != nil {
			t.Fatalf("an idle connection ended before the kill: %v", context.Cause(c.Context()))
		}
	}
	pids := d.steeredPids()
	if len(pids) != 2 {
		t.Fatalf("steered to %v, want 2 generations", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
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
	d.waitLog("quic.left", 1)
	l.waitAnswered(t, clients*10)
	// A reload after the kill still works.
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	l.waitAnswered(t, clients*10)
	l.end()
	t.Logf("old generation killed mid-drain: %d of its %d connections lost; new generations' load: %s", broken, len(idle), l)
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke on the new generations, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
}

// runHandoff runs handoff with args (as cred's user, if given) and returns
// its exit status and output; it must exit within 30 s.
func runHandoff(t *testing.T, cred *syscall.Credential, args ...string) (int, string) {
	t.Helper()
	handoff, _ := buildDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, handoff, args...)
	cmd.Dir = os.TempDir()
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("handoff %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestDaemonRefusesWorkers: --workers above 1 with a quic:// socket is
// refused at the start, on one line, with exit status 2.
func TestDaemonRefusesWorkers(t *testing.T) {
	code, out := runHandoff(t, nil, "run", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--workers", "2", "--listen", "quic://127.0.0.1:4433", "--", "/bin/true")
	if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "--workers 1") {
		t.Errorf("exit %d, output %q; want exit 2 and one line that says --workers 1", code, out)
	}
}

// TestDaemonWithoutPrivileges: a handoff that may not use BPF refuses to
// start, saying what to grant, and starts no generation.
func TestDaemonWithoutPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run handoff as nobody")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	code, out := runHandoff(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "run", "--control", filepath.Join(dir, "ctl.sock"), "--hold", "0",
		"--listen", "quic://127.0.0.1:4433", "--", "/bin/true")
	t.Logf("exit %d: %s", code, out)
	if code != 1 || !strings.Contains(out, "CAP_BPF") || !strings.Contains(out, "udp://") || strings.Contains(out, "generation.started") {
		t.Errorf("exit %d, output %q; want exit 1 naming CAP_BPF and udp://, no generation started", code, out)
	}
}

var handoffListeningRE = regexp.MustCompile(`handoff_pid=(\d+) event=quic\.listening .* key=([0-9a-f]+)`)

// TestDaemonSelfUpgrade: SIGUSR2 starts a new handoff, which takes the
// steering's maps from the old one, binds its own anchor and attaches its
// program; the old handoff's generation drains on its slot while the new
// handoff's serves: no request fails, no connection breaks, through the
// upgrade of handoff and a reload after it.
func TestDaemonSelfUpgrade(t *testing.T) {
	needBPF(t)
	d := startDaemon(t, "-drain", "10s")
	l := startLoad(t, d.addr, clients)
	l.waitAnswered(t, clients*10)
	if err := d.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	d.waitLog("quic.steered", 2)
	var newPid int
	keys := map[string]bool{}
	for _, m := range handoffListeningRE.FindAllStringSubmatch(readFile(d.log), -1) {
		newPid, _ = strconv.Atoi(m[1])
		keys[m[2]] = true
	}
	if len(keys) != 1 {
		t.Errorf("the handoffs steer with keys %v, want one: the new handoff did not take the old one's maps", keys)
	}
	if newPid == 0 || newPid == d.cmd.Process.Pid {
		t.Fatalf("no new handoff logged quic.listening (pid %d)", newPid)
	}
	t.Cleanup(func() { _ = syscall.Kill(newPid, syscall.SIGTERM) })
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the old handoff did not exit within 30 s of the upgrade")
	}
	l.waitAnswered(t, clients*10)
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	l.waitAnswered(t, clients*10)
	d.waitLog("h3.drained", 2)
	l.end()
	t.Logf("SIGUSR2, then a reload: %s", l)
	if l.failed.Load() != 0 || l.broken.Load() != 0 {
		t.Errorf("%d requests failed and %d connections broke, want 0 and 0", l.failed.Load(), l.broken.Load())
	}
	if len(l.pids) != 3 {
		t.Errorf("answered by %d generations, want 3", len(l.pids))
	}
	if err := syscall.Kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.waitLog("handoff.exit", 2)
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}
