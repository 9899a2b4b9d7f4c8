package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The control protocol: one JSON request per connection, one JSON reply.
//
//	{"cmd":"reload"}  →  ReloadResult, once the reload has ended
//	{"cmd":"rollback"}  →  ReloadResult, once the rollback has ended
//	{"cmd":"status"}  →  Status
//	{"cmd":"signal","signal":10}  →  SignalResult
type ctlMessage struct {
	Cmd    string `json:"cmd"`
	Signal int    `json:"signal,omitempty"`
}

type ctlRequest struct {
	cmd    string
	sig    syscall.Signal
	reload chan ReloadResult
	status chan Status
	signal chan SignalResult
}

// SignalResult is the outcome of `handoff signal`.
type SignalResult struct {
	OK    bool   `json:"ok"`
	Sent  []int  `json:"pids,omitempty"` // the pids that got the signal
	Gens  []int  `json:"generations,omitempty"`
	Error string `json:"error,omitempty"`
}

// Status is what `handoff status` shows.
type Status struct {
	PID         int         `json:"pid"`
	Program     string      `json:"program"`
	Generations []GenStatus `json:"generations"`
	Listeners   []Socket    `json:"listeners"`
	Restarts    int         `json:"restarts"`
	Reloading   bool        `json:"reloading"`
	Queued      bool        `json:"reload_queued"`
	Rollback    *runSpec    `json:"rollback,omitempty"` // what 'handoff rollback' would run
	Error       string      `json:"error,omitempty"`
}

// GenStatus describes one generation.
type GenStatus struct {
	Generation int     `json:"generation"`
	PID        int     `json:"pid"`
	State      string  `json:"state"`
	AgeSeconds float64 `json:"age_seconds"`
	Dir        string  `json:"dir,omitempty"`
}

// Socket describes one socket handoff holds.
type Socket struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}

// sendSignal sends sig to the serving generations (the current one, and the
// new one while it bakes beside it), unless sig would break handoff's
// bookkeeping.
func (s *supervisor) sendSignal(sig syscall.Signal) SignalResult {
	switch sig {
	case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		return SignalResult{Error: fmt.Sprintf("%s refused: it would kill or freeze the generation behind handoff's back — use 'handoff reload', or stop handoff", unix.SignalName(sig))}
	case s.cfg.StopSignal:
		return SignalResult{Error: fmt.Sprintf("%s refused: it is the stop signal (--stop-signal), and the generation would exit as if it crashed — use 'handoff reload', or stop handoff", unix.SignalName(sig))}
	}
	if sig <= 0 || sig > 64 {
		return SignalResult{Error: fmt.Sprintf("no signal number %d", int(sig))}
	}
	var r SignalResult
	for _, g := range []*generation{s.m.current, s.m.next} {
		if g == nil || (g.state != serving && g.state != baking) {
			continue
		}
		if err := unix.Kill(-g.pid, sig); err != nil {
			return SignalResult{Error: fmt.Sprintf("generation %d (pid %d): %v", g.n, g.pid, err)}
		}
		r.Sent, r.Gens = append(r.Sent, g.pid), append(r.Gens, g.n)
	}
	if len(r.Sent) == 0 {
		return SignalResult{Error: "no generation is serving"}
	}
	r.OK = true
	s.log.Info("signal sent", "signal", unix.SignalName(sig), "gen_pids", r.Sent)
	return r
}

// status describes handoff's state for `handoff status`.
func (s *supervisor) status() Status {
	m := s.m
	st := Status{PID: os.Getpid(), Program: s.cfg.Program, Restarts: m.restarts, Reloading: m.reloading, Queued: m.queued, Rollback: m.previous}
	for _, g := range m.gens {
		st.Generations = append(st.Generations, GenStatus{Generation: g.n, PID: g.pid, State: g.state.String(),
			AgeSeconds: time.Since(g.started).Round(time.Millisecond).Seconds(), Dir: g.dir})
	}
	for i, name := range s.names {
		st.Listeners = append(st.Listeners, Socket{Name: name, Addr: s.addrs[i], FD: 3 + i})
	}
	return st
}

// serveControl answers control connections on ln until it is closed.
func (s *supervisor) serveControl(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		go s.handleControl(c)
	}
}

func (s *supervisor) handleControl(c *net.UnixConn) {
	defer c.Close()
	if err := checkPeer(c); err != nil {
		s.log.Warn("control connection refused", "err", err)
		_ = json.NewEncoder(c).Encode(ReloadResult{Error: err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m ctlMessage
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&m); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	req := ctlRequest{cmd: m.Cmd, sig: syscall.Signal(m.Signal), reload: make(chan ReloadResult, 1), status: make(chan Status, 1), signal: make(chan SignalResult, 1)}
	var reply any
	switch m.Cmd {
	case "reload", "rollback", "status", "signal":
		s.ctlC <- req
		switch m.Cmd {
		case "reload", "rollback":
			reply = <-req.reload
		case "status":
			reply = <-req.status
		default:
			reply = <-req.signal
		}
	default:
		reply = ReloadResult{Error: fmt.Sprintf("unknown command %q", m.Cmd)}
	}
	_ = json.NewEncoder(c).Encode(reply)
}

// checkPeer admits root and the user handoff runs as.
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("uid %d may not control this handoff: only root and uid %d may", cred.Uid, os.Getuid())
	}
	return nil
}

// ask sends msg to the daemon at path and decodes its reply into v. timeout
// zero waits as long as the daemon takes (it bounds a reload itself).
func ask(path string, msg ctlMessage, timeout time.Duration, v any) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return fmt.Errorf("no handoff answers on %s — is 'handoff run' running? (--control gives another path)", path)
		}
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%s: permission denied — run as root or as the user handoff runs as", path)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	defer c.Close()
	if timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(timeout))
	}
	if err := json.NewEncoder(c).Encode(msg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := json.NewDecoder(c).Decode(v); err != nil {
		return fmt.Errorf("%s: no answer: %w", path, err)
	}
	return nil
}
