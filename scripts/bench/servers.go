package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// server is one strategy's server: started, upgraded, stopped.
type server interface {
	start() error
	addr() string
	// upgrade replaces the serving process and returns how long until the
	// new one was ready, the old pid, and when the old one began to drain.
	upgrade() (ready time.Duration, old int, drainFrom time.Time, err error)
	rssKB() int
	stop()
}

func newServer(e *env, name string) server {
	b := &base{e: e, dir: mustTemp(e.dir, name), address: freeAddr()}
	b.pidfile = filepath.Join(b.dir, "pid")
	switch name {
	case "library":
		return &signalled{base: b, bin: e.bins["httpserver"]}
	case "tableflip":
		return &signalled{base: b, bin: e.bins["tableflip"]}
	case "daemon":
		return &daemonServer{base: b}
	case "naive":
		return &plainServer{base: b}
	}
	return &plainServer{base: b, reuseport: true}
}

type base struct {
	e       *env
	dir     string
	address string
	pidfile string
	cmds    []*exec.Cmd
}

func (b *base) addr() string { return b.address }
func (b *base) rssKB() int   { return 0 }

func (b *base) launch(bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	logf, err := os.OpenFile(filepath.Join(b.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b.cmds = append(b.cmds, cmd)
	return cmd, nil
}

func (b *base) pid() int { return proc.ReadPid(b.pidfile) }

// waitPid waits until the pid file names a live pid other than old.
func (b *base) waitPid(old int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p := b.pid(); p != 0 && p != old && alive(p) {
			return p, nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, fmt.Errorf("no new pid after %v; see %s", timeout, filepath.Join(b.dir, "log"))
}

// stop sends SIGTERM to every process of the strategy and waits for them.
func (b *base) stop() {
	if p := b.pid(); p != 0 {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	for _, c := range b.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(40 * time.Second)
	for _, c := range b.cmds {
		for alive(c.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	if p := b.pid(); p != 0 {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// signalled is a server that upgrades itself on SIGHUP and writes its pid
// file when ready: handoff's library mode and tableflip.
type signalled struct {
	*base
	bin string
}

func (s *signalled) start() error {
	if _, err := s.launch(s.bin, "-addr", s.address, "-pidfile", s.pidfile); err != nil {
		return err
	}
	_, err := s.waitPid(0, 10*time.Second)
	return err
}

func (s *signalled) upgrade() (time.Duration, int, time.Time, error) {
	old := s.pid()
	start := time.Now()
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		return 0, 0, time.Time{}, err
	}
	if _, err := s.waitPid(old, time.Minute); err != nil {
		return 0, 0, time.Time{}, err
	}
	ready := time.Since(start)
	return ready, old, time.Now(), nil
}

// daemonServer is `handoff run` with examples/app, reloaded with `handoff
// reload`.
type daemonServer struct {
	*base
	cmd *exec.Cmd
}

func (d *daemonServer) control() string { return filepath.Join(d.dir, "control.sock") }

func (d *daemonServer) start() error {
	cmd, err := d.launch(d.e.bins["handoff"], "run", "--control", d.control(), "--max-draining", "8",
		"--listen", "web="+d.address, "--", d.e.bins["app"])
	if err != nil {
		return err
	}
	d.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := d.serving(); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("handoff run did not serve in 10s; see %s", filepath.Join(d.dir, "log"))
}

func (d *daemonServer) serving() (int, error) {
	out, err := exec.Command(d.e.bins["handoff"], "status", "--json", "--control", d.control()).Output()
	if err != nil {
		return 0, err
	}
	var st struct {
		Generations []struct {
			PID   int    `json:"pid"`
			State string `json:"state"`
		} `json:"generations"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, err
	}
	for _, g := range st.Generations {
		if g.State == "ready" {
			return g.PID, nil
		}
	}
	return 0, fmt.Errorf("no serving generation")
}

func (d *daemonServer) upgrade() (time.Duration, int, time.Time, error) {
	old, err := d.serving()
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	start := time.Now()
	if out, err := exec.Command(d.e.bins["handoff"], "reload", "--control", d.control()).CombinedOutput(); err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("handoff reload: %v: %s", err, out)
	}
	return time.Since(start), old, time.Now(), nil
}

func (d *daemonServer) rssKB() int { return rssKB(d.cmd.Process.Pid) }

// plainServer is a server without handoff, replaced by stopping it and
// starting a new one, or (reuseport) by starting a new one on its own
// SO_REUSEPORT socket and then stopping the old one.
type plainServer struct {
	*base
	reuseport bool
	cur       *exec.Cmd
}

func (p *plainServer) run() (*exec.Cmd, error) {
	args := []string{"-addr", p.address, "-pidfile", p.pidfile}
	if p.reuseport {
		args = append(args, "-reuseport")
	}
	return p.launch(p.e.bins["plain"], args...)
}

func (p *plainServer) start() error {
	cmd, err := p.run()
	if err != nil {
		return err
	}
	p.cur = cmd
	_, err = p.waitPid(0, 10*time.Second)
	return err
}

func (p *plainServer) upgrade() (time.Duration, int, time.Time, error) {
	old := p.cur
	start := time.Now()
	if !p.reuseport {
		_ = old.Process.Signal(syscall.SIGTERM)
		_ = old.Wait()
	}
	cmd, err := p.run()
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	p.cur = cmd
	if _, err := p.waitPid(old.Process.Pid, 30*time.Second); err != nil {
		return 0, 0, time.Time{}, err
	}
	ready := time.Since(start)
	if p.reuseport {
		drainFrom := time.Now()
		// runStrategy watches it exit (and reaps it).
		_ = old.Process.Signal(syscall.SIGTERM)
		return ready, old.Process.Pid, drainFrom, nil
	}
	return ready, old.Process.Pid, start, nil
}

func (p *plainServer) stop() {
	p.base.stop()
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func mustTemp(dir, name string) string {
	d, err := os.MkdirTemp(dir, name+"-")
	if err != nil {
		panic(err)
	}
	return d
}
