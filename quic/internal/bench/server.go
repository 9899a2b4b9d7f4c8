package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A target is an HTTP/3 server the load runs against, released again and
// again.
type target interface {
	// start starts the server and returns its address once it answers,
	// and the TLS server name to ask for ("" for the address's host).
	start() (addr, sni string, err error)
	// release starts a release and returns once the new version serves: the
	// new generation wrote its pid file (after its bake), or the reload
	// command returned. old is the pid of the process that now drains, or 0
	// if none does.
	release() (old int, err error)
	// stop stops the server and every process it started.
	stop()
}

// readyTimeout bounds a start and a release.
const readyTimeout = 30 * time.Second

// example is quic/examples/http3, steered or on one shared socket.
type example struct {
	bin, dir string
	shared   bool
	drain    time.Duration
	addr     string
	pidfile  string
	cmd      *exec.Cmd
	pids     []int
}

func (s *example) start() (string, string, error) {
	s.addr = freeUDPAddr()
	s.pidfile = filepath.Join(s.dir, "pid")
	logf, err := os.Create(filepath.Join(s.dir, "log"))
	if err != nil {
		return "", "", err
	}
	defer logf.Close()
	args := []string{"-addr", s.addr, "-pidfile", s.pidfile, "-drain", s.drain.String()}
	if s.shared {
		args = append(args, "-shared-socket")
	}
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = withoutNotify()
	if err := s.cmd.Start(); err != nil {
		return "", "", err
	}
	go func() { _ = s.cmd.Wait() }()
	p, err := s.waitPid(0)
	if err != nil {
		return "", "", err
	}
	s.pids = append(s.pids, p)
	return s.addr, "", nil
}

func (s *example) release() (int, error) {
	old := s.pids[len(s.pids)-1]
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		return 0, fmt.Errorf("SIGHUP to %d: %w", old, err)
	}
	p, err := s.waitPid(old)
	if err != nil {
		return 0, err
	}
	s.pids = append(s.pids, p)
	return old, nil
}

// waitPid waits until the pid file names a live process other than old.
func (s *example) waitPid(old int) (int, error) {
	for deadline := time.Now().Add(readyTimeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		b, _ := os.ReadFile(s.pidfile)
		if p, _ := strconv.Atoi(strings.TrimSpace(string(b))); p != 0 && p != old && alive(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no new generation wrote %s within %v; see %s", s.pidfile, readyTimeout, filepath.Join(s.dir, "log"))
}

func (s *example) stop() {
	if len(s.pids) > 0 {
		last := s.pids[len(s.pids)-1]
		_ = syscall.Kill(last, syscall.SIGTERM)
		waitGone(last, s.drain+5*time.Second)
	}
	// The pid file may name a generation that came too late to be counted.
	b, _ := os.ReadFile(s.pidfile)
	if p, _ := strconv.Atoi(strings.TrimSpace(string(b))); p > 0 {
		s.pids = append(s.pids, p)
	}
	for _, p := range s.pids {
		if alive(p) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
}

// caddyName is the name Caddy's site answers to, with a certificate of its
// local CA (tls internal): Caddy picks certificates by the TLS server name,
// which a client that dials an IP address does not send.
const caddyName = "localhost"

// caddy is Debian's Caddy serving HTTP/3 itself (tls internal), reloaded
// with `caddy reload`.
type caddy struct {
	bin, dir string
	admin    string
	conf     string
	cmd      *exec.Cmd
}

func (c *caddy) env() []string {
	return append(withoutNotify(), "HOME="+c.dir, "XDG_DATA_HOME="+c.dir, "XDG_CONFIG_HOME="+c.dir)
}

func (c *caddy) start() (string, string, error) {
	addr := freeUDPAddr()
	_, port, _ := net.SplitHostPort(addr)
	c.admin = freeTCPAddr()
	// HTTP/3 is on by default since Caddy 2.6; the local CA's root is not
	// installed into the system's trust store (the clients skip the check).
	conf := fmt.Sprintf(`{
	admin %s
	skip_install_trust
	auto_https disable_redirects
	https_port %s
	servers {
		protocols h1 h2 h3
	}
}
https://%s:%s {
	tls internal
	respond "caddy" 200
}
`, c.admin, port, caddyName, port)
	c.conf = filepath.Join(c.dir, "Caddyfile")
	if err := os.WriteFile(c.conf, []byte(conf), 0o644); err != nil {
		return "", "", err
	}
	logf, err := os.Create(filepath.Join(c.dir, "log"))
	if err != nil {
		return "", "", err
	}
	defer logf.Close()
	c.cmd = exec.Command(c.bin, "run", "--config", c.conf, "--adapter", "caddyfile")
	c.cmd.Env = c.env()
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		return "", "", err
	}
	go func() { _ = c.cmd.Wait() }()
	if err := waitHTTP3(addr, caddyName); err != nil {
		return "", "", fmt.Errorf("%w; see %s", err, filepath.Join(c.dir, "log"))
	}
	return addr, caddyName, nil
}

func (c *caddy) release() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, "reload", "--config", c.conf, "--adapter", "caddyfile", "--address", c.admin, "--force")
	cmd.Env = c.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("caddy reload: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return 0, nil
}

func (c *caddy) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	waitGone(c.cmd.Process.Pid, 10*time.Second)
	_ = c.cmd.Process.Kill()
}

// waitHTTP3 waits until a POST over HTTP/3 to addr, asking for the TLS
// server name sni, is answered 200.
func waitHTTP3(addr, sni string) error {
	l := &load{stop: make(chan struct{}), classes: map[string]int{}, sni: sni}
	var last error
	for deadline := time.Now().Add(readyTimeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, closeClient := l.newClient(addr)
		last = post(c, "https://"+addr+"/", []byte("ping"))
		closeClient()
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("%s does not answer HTTP/3 within %v: %w", addr, readyTimeout, last)
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// waitGone waits until pid has exited, at most d; it reports whether it
// has.
func waitGone(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if !alive(pid) {
			return true
		}
	}
	return !alive(pid)
}

// withoutNotify is the environment without systemd's notify socket: the
// servers are the benchmark's, not the service manager's.
func withoutNotify() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "LISTEN_") {
			env = append(env, kv)
		}
	}
	return env
}

// freeUDPAddr returns a loopback address whose UDP port was free a moment ago.
func freeUDPAddr() string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// freeTCPAddr returns a loopback address whose TCP port was free a moment ago.
func freeTCPAddr() string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
