//go:build linux

package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/machine"
	"github.com/handoff-dev/handoff/daemon/internal/procfs"
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
	cmd     string
	sig     syscall.Signal
	reload  chan machine.ReloadResult
	status  chan Status
	signal  chan SignalResult
	metrics chan []byte
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
	// Killed counts the generations handoff had to kill with SIGKILL: not
	// ready within --ready-timeout, hung, still draining at
	// --drain-timeout, past --max-draining, or on a second stop signal.
	Killed int `json:"killed"`
	// Unresponsive counts the processes replaced because they were shown
	// hung (--hung-after).
	Unresponsive int           `json:"unresponsive"`
	Reloading    bool          `json:"reloading"`
	Queued       bool          `json:"reload_queued"`
	Rollback     *machine.Spec `json:"rollback,omitempty"` // what 'handoff rollback' would run
	// Workers lists each worker index: what serves there, with --workers
	// above 1.
	Workers []WorkerStatus `json:"workers,omitempty"`
	// ReloadBound is the longest a reload asked now can take, in seconds:
	// 'handoff reload' waits that long by default.
	ReloadBound float64 `json:"reload_bound_seconds,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// GenStatus describes one generation.
type GenStatus struct {
	Generation int     `json:"generation"`
	Worker     int     `json:"worker"`
	PID        int     `json:"pid"`
	State      string  `json:"state"`
	AgeSeconds float64 `json:"age_seconds"`
	Dir        string  `json:"dir,omitempty"`
}

// WorkerStatus describes one worker index of the service.
type WorkerStatus struct {
	Index      int    `json:"index"`
	Generation int    `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	State      string `json:"state"` // ready, starting, restarting, crashing (restarting after failingAfter exits in a row)
	// UptimeSeconds is how long its serving process has run.
	UptimeSeconds float64 `json:"uptime_seconds"`
	Restarts      int     `json:"restarts"`
	// Unresponsive counts the processes at this index replaced because
	// they were shown hung.
	Unresponsive int   `json:"unresponsive"`
	RSSBytes     int64 `json:"rss_bytes,omitempty"`
}

// Socket describes one socket handoff holds.
type Socket struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}

// sendSignal sends sig to every serving process (every worker of the
// current generation, and a new one while it bakes beside them), unless sig
// would break handoff's bookkeeping.
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
	for _, g := range s.m.View().Gens {
		if g.State != machine.Serving && g.State != machine.Baking {
			continue
		}
		if err := unix.Kill(-g.PID, sig); err != nil {
			return SignalResult{Error: fmt.Sprintf("generation %d (pid %d): %v", g.N, g.PID, err)}
		}
		r.Sent, r.Gens = append(r.Sent, g.PID), append(r.Gens, g.N)
	}
	if len(r.Sent) == 0 {
		return SignalResult{Error: "no generation is serving"}
	}
	r.OK = true
	s.log.Info("signal sent", "event", "signal.sent", "signal", unix.SignalName(sig), "gen_pids", r.Sent)
	return r
}

// status describes handoff's state for `handoff status`.
func (s *supervisor) status() Status {
	v := s.m.View()
	st := Status{PID: os.Getpid(), Program: s.cfg.Program, Restarts: v.Restarts, Killed: v.Killed, Unresponsive: v.Unresponsive,
		Reloading: v.Reloading, Queued: v.Queued, Rollback: v.Rollback, ReloadBound: s.reloadBound().Seconds()}
	for _, g := range v.Gens {
		state := g.State.String()
		if g.Unresponsive && g.State == machine.Serving {
			state = "unresponsive" // paused, while its replacement starts
		}
		st.Generations = append(st.Generations, GenStatus{Generation: g.N, Worker: g.W, PID: g.PID, State: state,
			AgeSeconds: time.Since(g.Started).Round(time.Millisecond).Seconds(), Dir: g.Dir})
	}
	if len(v.Workers) > 1 {
		for w, sl := range v.Workers {
			ws := WorkerStatus{Index: w, Restarts: sl.Restarts, Unresponsive: sl.Unresponsive, State: "restarting"}
			switch g := sl.Cur; {
			case g != nil:
				ws.Generation, ws.PID, ws.State = g.N, g.PID, "ready"
				if g.Unresponsive {
					ws.State = "unresponsive"
				}
				ws.UptimeSeconds = time.Since(g.Started).Round(time.Millisecond).Seconds()
				ws.RSSBytes, _ = procfs.ResidentBytes(g.PID)
			case sl.Next != nil:
				ws.Generation, ws.PID, ws.State = sl.Next.N, sl.Next.PID, sl.Next.State.String()
			case sl.Crashing:
				ws.State = "crashing"
			}
			st.Workers = append(st.Workers, ws)
		}
	}
	for i, name := range s.names {
		st.Listeners = append(st.Listeners, Socket{Name: name, Addr: s.addrs[i], FD: 3 + i})
	}
	return st
}

// Bounds on control connections: a request must arrive within
// ctlReadTimeout and be at most ctlMaxRequest bytes (the largest real one is
// under 100), and a reply must be taken within ctlWriteTimeout.
const (
	ctlReadTimeout  = 5 * time.Second
	ctlWriteTimeout = 5 * time.Second
	ctlMaxRequest   = 4 << 10
)

// Accept backoff: after an accept error that is not the listener's close
// (no descriptors left, no memory), serveControl waits acceptMin, doubled on
// each error in a row up to acceptMax, and tries again.
const (
	acceptMin = 5 * time.Millisecond
	acceptMax = time.Second
)

// reloadBound returns the longest a reload asked now can take: one under way
// to its end, then its own, each a start bounded by --ready-timeout and a
// bake window, and a margin for reading the env file and starting the
// process.
func (s *supervisor) reloadBound() time.Duration {
	return 2*(s.cfg.ReadyTimeout+s.cfg.Bake) + 30*time.Second
}

// serveControl answers control connections on ln until it is closed. An
// accept error other than the close — EMFILE when the fd table is full, for
// one — is retried with backoff: the control socket outlives every such
// episode. An episode is logged once when it begins and once when it ends:
// at the first accept a second or more after its last error (descriptors
// freed one at a time let accepts and errors alternate for a while).
func (s *supervisor) serveControl(ln *net.UnixListener) {
	var wait time.Duration
	var failing error
	var errs int
	var lastErr time.Time
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if failing == nil {
				failing, errs = err, 0
				s.log.Error("control socket: accept failed; retrying with backoff until it works again", "event", "control.accept_failed", "err", err)
			}
			errs++
			lastErr = time.Now()
			wait = min(max(2*wait, acceptMin), acceptMax)
			time.Sleep(wait)
			continue
		}
		wait = 0
		if failing != nil && time.Since(lastErr) >= time.Second {
			s.log.Info("control socket: accepting again", "event", "control.accepting", "after", failing.Error(), "errors", errs)
			failing = nil
		}
		go s.handleControl(c)
	}
}

func (s *supervisor) handleControl(c *net.UnixConn) {
	defer c.Close()
	reply := func(v any) {
		_ = c.SetWriteDeadline(time.Now().Add(ctlWriteTimeout))
		_ = json.NewEncoder(c).Encode(v)
	}
	if err := checkPeer(c); err != nil {
		s.log.Warn("control connection refused", "event", "control.refused", "err", err)
		reply(machine.ReloadResult{Error: err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(ctlReadTimeout))
	var m ctlMessage
	if err := json.NewDecoder(io.LimitReader(c, ctlMaxRequest)).Decode(&m); err != nil {
		if err == io.EOF {
			return // closed without a word: nothing to answer
		}
		why := fmt.Sprintf("bad request: %v", err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			why = fmt.Sprintf("bad request: not one JSON object of at most %d bytes", ctlMaxRequest)
		}
		s.log.Warn("control request refused", "event", "control.request_refused", "err", why)
		reply(machine.ReloadResult{Error: why})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	req := ctlRequest{cmd: m.Cmd, sig: syscall.Signal(m.Signal), reload: make(chan machine.ReloadResult, 1), status: make(chan Status, 1), signal: make(chan SignalResult, 1)}
	switch m.Cmd {
	case "reload", "rollback", "status", "signal":
		s.ctlC <- req
		switch m.Cmd {
		case "reload", "rollback":
			reply(<-req.reload)
		case "status":
			reply(<-req.status)
		default:
			reply(<-req.signal)
		}
	default:
		reply(machine.ReloadResult{Error: fmt.Sprintf("unknown command %q", m.Cmd)})
	}
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

// ask sends msg to the daemon at path and decodes its reply into v, giving up
// after timeout (which must be positive): a control socket that accepts
// nothing, or a daemon that never answers, costs the caller timeout at most.
func ask(path string, msg ctlMessage, timeout time.Duration, v any) error {
	c, err := net.DialTimeout("unix", path, min(timeout, 5*time.Second))
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
	_ = c.SetDeadline(time.Now().Add(timeout))
	// A daemon that refuses the caller answers at once and closes, which
	// can fail the write with EPIPE: its answer, if one came, says why.
	werr := json.NewEncoder(c).Encode(msg)
	if err := json.NewDecoder(c).Decode(v); err != nil {
		if werr != nil {
			return fmt.Errorf("%s: %w", path, werr)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%s: no answer within %v — 'handoff run' accepted nothing or is stuck; its log says why: %w", path, timeout, err)
		}
		return fmt.Errorf("%s: no answer: %w", path, err)
	}
	return nil
}
