//go:build linux

package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"golang.org/x/sys/unix"
)

// Bounds on control connections: a request must arrive within
// ctlReadTimeout and be at most ctlMaxRequest bytes (the largest real one is
// under 100), and a reply must be taken within ctlWriteTimeout.
const (
	ctlReadTimeout  = 5 * time.Second
	ctlWriteTimeout = 5 * time.Second
	ctlMaxRequest   = 4 << 10
)

// Accept backoff: after an accept error that is not the listener's close
// (no descriptors left, no memory), Serve waits acceptMin, doubled on
// each error in a row up to acceptMax, and tries again.
const (
	acceptMin = 5 * time.Millisecond
	acceptMax = time.Second
)

// Serve answers control connections on ln until it is closed. An
// accept error other than the close — EMFILE when the fd table is full, for
// one — is retried with backoff: the control socket outlives every such
// episode. An episode is logged once when it begins and once when it ends:
// at the first accept a second or more after its last error (descriptors
// freed one at a time let accepts and errors alternate for a while).
//
// Each request becomes a Call on calls, which the caller answers; a bad
// request is answered with a ReloadResult that says what is wrong.
func Serve(ln *net.UnixListener, log *slog.Logger, calls chan<- Call) {
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
				log.Error("control socket: accept failed; retrying with backoff until it works again", "event", "control.accept_failed", "err", err)
			}
			errs++
			lastErr = time.Now()
			wait = min(max(2*wait, acceptMin), acceptMax)
			time.Sleep(wait)
			continue
		}
		wait = 0
		if failing != nil && time.Since(lastErr) >= time.Second {
			log.Info("control socket: accepting again", "event", "control.accepting", "after", failing.Error(), "errors", errs)
			failing = nil
		}
		go handle(c, log, calls)
	}
}

func handle(c *net.UnixConn, log *slog.Logger, calls chan<- Call) {
	defer c.Close()
	reply := func(v any) {
		_ = c.SetWriteDeadline(time.Now().Add(ctlWriteTimeout))
		_ = json.NewEncoder(c).Encode(v)
	}
	if err := checkPeer(c); err != nil {
		log.Warn("control connection refused", "event", "control.refused", "err", err)
		reply(gen.ReloadResult{Error: err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(ctlReadTimeout))
	var m Message
	if err := json.NewDecoder(io.LimitReader(c, ctlMaxRequest)).Decode(&m); err != nil {
		if err == io.EOF {
			return // closed without a word: nothing to answer
		}
		why := fmt.Sprintf("bad request: %v", err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			why = fmt.Sprintf("bad request: not one JSON object of at most %d bytes", ctlMaxRequest)
		}
		log.Warn("control request refused", "event", "control.request_refused", "err", why)
		reply(gen.ReloadResult{Error: why})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	req := Call{Cmd: m.Cmd, Sig: syscall.Signal(m.Signal), Reload: make(chan gen.ReloadResult, 1), Status: make(chan Status, 1), Signal: make(chan SignalResult, 1)}
	switch m.Cmd {
	case "reload", "rollback", "status", "signal":
		calls <- req
		switch m.Cmd {
		case "reload", "rollback":
			reply(<-req.Reload)
		case "status":
			reply(<-req.Status)
		default:
			reply(<-req.Signal)
		}
	default:
		reply(gen.ReloadResult{Error: fmt.Sprintf("unknown command %q", m.Cmd)})
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
