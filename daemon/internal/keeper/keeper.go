//go:build linux

package keeper

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/logs"
	"golang.org/x/sys/unix"
)

// What is left when handoff dies. Each generation is started with its stop
// signal as its parent-death signal (PR_SET_PDEATHSIG): if handoff is killed
// (SIGKILL, the OOM killer), the generations drain and exit as on a stop.
// Their output goes through pipes that handoff reads; a pipe whose reader is
// gone would fail their next write (and kill a Go program, which dies of
// SIGPIPE on a failed write to fd 1 or 2). So a keeper — handoff itself,
// re-executed with Command — holds a copy of each pipe's read end and
// of each listening socket, does nothing with them while handoff lives, and
// when handoff dies:
//
//   - copies what the generations still write to the output handoff had,
//     until they have all exited;
//   - holds the listening sockets for --hold, so that connections that come
//     meanwhile wait in the kernel's accept queue instead of being refused,
//     and offers them on a Unix socket beside the control socket (its path
//     and ".hold"): a handoff started again with the same --control takes
//     them (TakeHeld) and its first generation serves what waited. If nobody
//     takes them within the hold, the keeper closes them, so that clients
//     are refused rather than left waiting, and says so. A stop signal
//     (SIGTERM, SIGINT: a service manager stopping what is left) ends the
//     hold at once.
//
// The generations do not serve on until a new handoff comes: unmanaged, they
// would have no drain timeout, no restart and no watchdog, and if the keeper
// died too they would hold the address forever. Draining at once costs only
// the wait in the queue. The keeper costs one small idle process; handoff
// says "bye" to it when it exits, and starts another if it dies
// (Start).

// Command is the hidden first argument with which handoff starts its
// output keeper.
const Command = "__handoff_keeper"

// handOverTimeout bounds one hand-over of the held sockets to a new handoff.
const handOverTimeout = 10 * time.Second

// Main runs the output keeper, with args HOLD PATH LOGFORMAT: how long to
// hold the sockets once handoff is gone (0: close them at once), where to
// offer them, and handoff's --log-format. fd 3 is a SOCK_SEQPACKET socket
// from handoff, on which it gets:
//
//	hold KEY PID           + the read ends of a generation's stdout and stderr (PID leads its process group)
//	drop KEY               that generation has exited
//	sock TYPE NAME ADDR    + a listening socket (TYPE stream or dgram)
//	unsock                 handoff stops: close the sockets, answer "unsocked"
//	bye                    handoff exits: exit 0
//
// If the socket ends without "bye", handoff died: the keeper holds the
// sockets (see above) and copies what the pipes carry to its own stdout and
// stderr (handoff's) until each ends, then exits 0.
func Main(args []string, stderr io.Writer) int {
	// A Ctrl-C or a stop aimed at handoff's process group is handoff's to
	// handle; the keeper follows handoff.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	var hold time.Duration
	var at, format string
	if len(args) == 3 {
		hold, _ = time.ParseDuration(args[0])
		at, format = args[1], args[2]
	}
	log := slog.New(logs.Handler(format, stderr)).With("keeper_pid", os.Getpid())
	c, err := net.FileConn(os.NewFile(3, "handoff-keeper"))
	if err != nil {
		fmt.Fprintln(stderr, "handoff: keeper:", err)
		return 1
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		fmt.Fprintln(stderr, "handoff: keeper: fd 3 is not a Unix socket")
		return 1
	}
	held := map[string][]*os.File{}
	pgids := map[string]int{} // each generation's process group
	var socks []heldSocket
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(2*4))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			break // handoff is gone
		}
		files := rights(oob[:oobn])
		f := strings.SplitN(string(buf[:n]), " ", 4)
		if flags&unix.MSG_CTRUNC != 0 {
			log.Error("a descriptor from handoff did not fit in the keeper's descriptor table: raise the limit (ulimit -n, LimitNOFILE=)", "event", "keeper.fds_full", "msg", string(buf[:n]))
		}
		switch {
		case len(f) == 1 && f[0] == "bye":
			return 0
		case len(f) == 3 && f[0] == "hold" && len(files) == 2:
			held[f[1]] = files
			pgids[f[1]], _ = strconv.Atoi(f[2])
			continue
		case len(f) == 4 && f[0] == "sock" && len(files) == 1:
			socks = append(socks, heldSocket{typ: f[1], name: f[2], addr: f[3], f: files[0]})
			continue
		case len(f) == 1 && f[0] == "unsock":
			closeSockets(socks)
			socks = nil
			_, _, _ = uc.WriteMsgUnix([]byte("unsocked"), nil, nil)
		case len(f) == 2 && f[0] == "drop":
			for _, h := range held[f[1]] {
				h.Close()
			}
			delete(held, f[1])
			delete(pgids, f[1])
		}
		for _, h := range files {
			h.Close()
		}
	}
	// A generation handoff had paused for a moment (the bake's probe)
	// could not drain: resume them all.
	for _, pgid := range pgids {
		if pgid > 0 {
			_ = unix.Kill(-pgid, unix.SIGCONT)
		}
	}
	var wg sync.WaitGroup
	for _, h := range held {
		for i, r := range h {
			w := os.Stdout
			if i == 1 {
				w = os.Stderr
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(w, r)
			}()
		}
	}
	if len(socks) > 0 {
		if hold > 0 && at != "" {
			// From now on a stop signal is the keeper's own: a service
			// manager stopping what is left (systemd's control-group kill
			// mode) must not wait for the hold.
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
			holdSockets(log, socks, hold, at, stop)
		} else {
			closeSockets(socks)
		}
	}
	wg.Wait()
	return 0
}

// heldSocket is a listening socket the keeper holds: its type ("stream" or
// "dgram"), its name and address as handoff had them.
type heldSocket struct {
	typ, name, addr string
	f               *os.File
}

func closeSockets(socks []heldSocket) {
	for _, s := range socks {
		s.f.Close()
	}
}

func addrsOf(socks []heldSocket) []string {
	var out []string
	for _, s := range socks {
		out = append(out, s.addr)
	}
	return out
}

// rights returns the descriptors an SCM_RIGHTS message carried, close-on-exec.
func rights(oob []byte) []*os.File {
	var files []*os.File
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		fds, _ := unix.ParseUnixRights(&m)
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "held"))
		}
	}
	return files
}

// holdSockets offers socks at path for hold to a handoff started again with
// the same control socket, and returns once one took them, the hold has
// expired or a signal came on stop; the keeper's copies are closed then.
func holdSockets(log *slog.Logger, socks []heldSocket, hold time.Duration, path string, stop <-chan os.Signal) {
	defer closeSockets(socks)
	ln, err := listenHold(path)
	if err != nil {
		log.Error("handoff is gone and its sockets cannot be offered to a new one: closing them, so new connections are refused",
			"event", "keeper.hold_failed", "at", path, "addrs", addrsOf(socks), "err", err)
		return
	}
	defer ln.Close() // removes the file
	done := make(chan struct{})
	defer close(done)
	var stopped atomic.Value
	go func() {
		select {
		case sig := <-stop:
			stopped.Store(sig.String())
			ln.Close()
		case <-done:
		}
	}()
	deadline := time.Now().Add(hold)
	log.Warn("handoff is gone: holding its sockets (new connections wait) for a handoff started again with the same --control",
		"event", "keeper.holding", "hold", hold.String(), "at", path, "addrs", addrsOf(socks))
	for {
		_ = ln.SetDeadline(deadline)
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if sig, ok := stopped.Load().(string); ok {
				log.Warn("stopped during the hold: closed the sockets, new connections are refused", "event", "keeper.hold_stopped", "signal", sig, "addrs", addrsOf(socks))
				return
			}
			log.Error("holding the sockets: accept failed; closing them", "event", "keeper.hold_failed", "err", err)
			return
		}
		taker, err := handOver(c, socks)
		c.Close()
		if err != nil {
			log.Warn("a new handoff did not take the sockets; holding them on", "event", "keeper.hand_over_failed", "taker_pid", taker, "err", err)
			continue
		}
		log.Info("handed the sockets over to a new handoff", "event", "keeper.handed_over", "taker_pid", taker, "addrs", addrsOf(socks))
		return
	}
	log.Warn("no handoff took the sockets within the hold: closed them, new connections are refused",
		"event", "keeper.hold_expired", "hold", hold.String(), "addrs", addrsOf(socks))
}

// listenHold listens for takers at path (SOCK_SEQPACKET, mode 0600),
// replacing a stale socket file that nothing answers on.
func listenHold(path string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixpacket"}
	ln, err := net.ListenUnix("unixpacket", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		if c, derr := net.Dial("unixpacket", path); derr == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another keeper holds sockets there", path)
		}
		_ = os.Remove(path)
		ln, err = net.ListenUnix("unixpacket", addr)
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// handOver sends socks to the handoff on c — only to a process of this
// user, or root — and returns its pid once it says it has taken them.
func handOver(c *net.UnixConn, socks []heldSocket) (int, error) {
	_ = c.SetDeadline(time.Now().Add(handOverTimeout))
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return int(cred.Pid), fmt.Errorf("uid %d is neither root nor this keeper's user", cred.Uid)
	}
	for _, s := range socks {
		fd, err := s.f.SyscallConn()
		if err != nil {
			return int(cred.Pid), err
		}
		var serr error
		if err := fd.Control(func(fd uintptr) {
			_, _, serr = c.WriteMsgUnix([]byte("sock "+s.typ+" "+s.name+" "+s.addr), unix.UnixRights(int(fd)), nil)
		}); err != nil {
			return int(cred.Pid), err
		}
		if serr != nil {
			return int(cred.Pid), serr
		}
	}
	if _, _, err := c.WriteMsgUnix([]byte("end"), nil, nil); err != nil {
		return int(cred.Pid), err
	}
	buf := make([]byte, 64)
	n, _, _, _, err := c.ReadMsgUnix(buf, nil)
	switch {
	case err != nil:
		return int(cred.Pid), fmt.Errorf("waiting for its answer: %w", err)
	case string(buf[:n]) != "taken":
		return int(cred.Pid), errors.New("it closed the connection without taking them")
	}
	return int(cred.Pid), nil
}
