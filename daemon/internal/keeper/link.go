//go:build linux

package keeper

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/launch"
	"github.com/handoff-dev/handoff/daemon/internal/reaper"
	"golang.org/x/sys/unix"
)

// Keeper restarts: the first comes at once; each further one within
// keeperStable of the last start waits twice as long as the one before,
// from keeperBackoffMin up to keeperBackoffMax.
const (
	keeperStable     = 10 * time.Second
	keeperBackoffMin = 100 * time.Millisecond
	keeperBackoffMax = 30 * time.Second
)

// Keeper is handoff's end of the output keeper (Main); nil where none
// runs (its methods do nothing then). It remembers what the keeper holds —
// each live generation's output pipes and the listening sockets — so that a
// keeper that dies is replaced at once by one that holds the same. Its
// methods are safe to call from any goroutine.
type Keeper struct {
	log  *slog.Logger
	self string
	r    *reaper.Reaper
	args []string // HOLD PATH LOGFORMAT
	stop chan struct{}

	mu       sync.Mutex
	conn     *net.UnixConn // nil between a keeper's exit and the next one's start
	pid      int
	exited   chan struct{} // closed once the current keeper has exited
	closing  bool
	outputs  map[string]keptOutput
	sockets  []keptSocket
	restarts int
	quick    int  // exits in a row, each within keeperStable of its start
	saidLoop bool // keeper.crash_loop was logged
}

type keptOutput struct {
	pid            int
	stdout, stderr *os.File
}

type keptSocket struct {
	typ, name, addr string
	f               *os.File
}

// Start starts the output keeper, a child of handoff in its process
// group, recorded with the reaper as handoff's own. It holds the sockets for
// hold once handoff is gone, offering them at holdPath
// (config.Config.HoldPath).
func Start(self string, r *reaper.Reaper, log *slog.Logger, hold time.Duration, holdPath, logFormat string) (*Keeper, error) {
	k := &Keeper{log: log, self: self, r: r, stop: make(chan struct{}), outputs: map[string]keptOutput{},
		args: []string{hold.String(), holdPath, logFormat}}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.spawn(); err != nil {
		return nil, err
	}
	return k, nil
}

// spawn starts a keeper process and hands it what the keeper holds; k.mu is
// held.
func (k *Keeper) spawn() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("starting the output keeper: %w", os.NewSyscallError("socketpair", err))
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "keeper"), os.NewFile(uintptr(fds[1]), "keeper")
	defer theirs.Close()
	defer mine.Close()
	cmd := exec.Command(k.self, append([]string{Command}, k.args...)...)
	cmd.Args[0] = "handoff-keeper"
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := k.r.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	}); err != nil {
		return fmt.Errorf("starting the output keeper: %w", err)
	}
	c, err := net.FileConn(mine)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		k.r.Done(cmd.Process.Pid)
		return fmt.Errorf("starting the output keeper: %w", err)
	}
	k.conn, k.pid, k.exited = c.(*net.UnixConn), cmd.Process.Pid, make(chan struct{})
	go k.watch(cmd, k.exited, time.Now())
	for key, o := range k.outputs {
		k.sendFiles(fmt.Sprintf("hold %s %d", key, o.pid), o.stdout, o.stderr)
	}
	for _, s := range k.sockets {
		k.sendSocket(s)
	}
	return nil
}

// watch waits for the keeper cmd to exit and, unless handoff is saying
// goodbye, starts another — at once the first time, with a backoff if it
// keeps exiting.
func (k *Keeper) watch(cmd *exec.Cmd, exited chan struct{}, started time.Time) {
	err := cmd.Wait()
	k.r.Done(cmd.Process.Pid)
	close(exited)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closing {
		return
	}
	k.conn.Close()
	k.conn = nil
	if time.Since(started) < keeperStable {
		k.quick++
	} else {
		k.quick = 1
	}
	delay := time.Duration(0)
	if k.quick > 1 {
		delay = min(keeperBackoffMin<<(k.quick-2), keeperBackoffMax)
	}
	k.log.Warn("the output keeper exited; starting another", "event", "keeper.gone", "keeper_pid", cmd.Process.Pid,
		"status", launch.DescribeExit(err), "generations", len(k.outputs), "sockets", len(k.sockets), "delay", delay.String())
	if k.quick == 3 && !k.saidLoop {
		k.saidLoop = true
		k.log.Error("the output keeper keeps exiting: restarting it with a backoff of up to "+keeperBackoffMax.String(),
			"event", "keeper.crash_loop", "exits", k.quick)
	}
	for {
		if delay > 0 {
			k.mu.Unlock()
			select {
			case <-k.stop:
				k.mu.Lock()
				return
			case <-time.After(delay):
			}
			k.mu.Lock()
			if k.closing {
				return
			}
		}
		err := k.spawn()
		if err == nil {
			k.restarts++
			k.log.Info("output keeper started again", "event", "keeper.restarted", "keeper_pid", k.pid, "restarts", k.restarts,
				"generations", len(k.outputs), "sockets", len(k.sockets))
			return
		}
		k.log.Error("cannot start another output keeper: if handoff dies, the generations' next writes to their output will fail",
			"event", "keeper.failed", "err", err)
		k.quick++
		delay = min(keeperBackoffMin<<min(k.quick-2, 20), keeperBackoffMax)
	}
}

// Hold gives the keeper copies of the output pipes' read ends of the
// generation key, whose process group pid leads.
func (k *Keeper) Hold(key string, pid int, stdout, stderr *os.File) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.outputs[key] = keptOutput{pid, stdout, stderr}
	k.sendFiles(fmt.Sprintf("hold %s %d", key, pid), stdout, stderr)
}

// Drop tells the keeper that generation key has exited.
func (k *Keeper) Drop(key string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.outputs, key)
	k.send("drop "+key, nil)
}

// HoldSockets gives the keeper copies of the listening sockets, one message
// each: a socket that cannot be passed is logged, and the others are held.
func (k *Keeper) HoldSockets(names, addrs []string, packet []bool, files []*os.File) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, f := range files {
		s := keptSocket{typ: "stream", name: names[i], addr: addrs[i], f: f}
		if packet[i] {
			s.typ = "dgram"
		}
		k.sockets = append(k.sockets, s)
		k.sendSocket(s)
	}
}

// ReleaseSockets has the keeper close its copies of the sockets, and waits
// up to a second for it to say it has: a stop must leave the sockets to the
// generations alone, so that they stop listening when the last one closes
// them.
func (k *Keeper) ReleaseSockets() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.sockets) == 0 {
		return
	}
	k.sockets = nil
	if k.conn == nil || !k.send("unsock", nil) {
		return
	}
	_ = k.conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 16)
	if n, _, _, _, err := k.conn.ReadMsgUnix(buf, nil); err != nil || string(buf[:n]) != "unsocked" {
		k.log.Warn("the output keeper did not say it closed the sockets", "event", "keeper.release_failed", "keeper_pid", k.pid, "err", err)
	}
	_ = k.conn.SetReadDeadline(time.Time{})
}

// Bye tells the keeper that handoff exits, closes the socket, and waits up
// to a second for the keeper to exit, so that handoff leaves nothing behind.
func (k *Keeper) Bye() {
	if k == nil {
		return
	}
	k.mu.Lock()
	k.closing = true
	close(k.stop)
	exited := k.exited
	if k.conn != nil {
		k.send("bye", nil)
		k.conn.Close()
	}
	k.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(time.Second):
		k.log.Warn("the output keeper did not exit within a second of handoff's goodbye", "event", "keeper.slow_exit")
	}
}

// sendFiles sends msg with the descriptors of files; k.mu is held. A file
// already closed (its generation has exited) is left out, and so is the
// message.
func (k *Keeper) sendFiles(msg string, files ...*os.File) {
	var fds []int
	var raws []syscall.RawConn
	for _, f := range files {
		raw, err := f.SyscallConn()
		if err != nil {
			return
		}
		raws = append(raws, raw)
	}
	// Hold each descriptor open (Control) while the message carries it.
	var do func(i int)
	do = func(i int) {
		if i == len(raws) {
			k.send(msg, unix.UnixRights(fds...))
			return
		}
		_ = raws[i].Control(func(fd uintptr) {
			fds = append(fds, int(fd))
			do(i + 1)
		})
	}
	do(0)
}

func (k *Keeper) sendSocket(s keptSocket) {
	raw, err := s.f.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		if !k.send("sock "+s.typ+" "+s.name+" "+s.addr, unix.UnixRights(int(fd))) {
			k.log.Warn("the output keeper was not given this socket: if handoff dies, it closes with it", "event", "keeper.socket_failed",
				"keeper_pid", k.pid, "addr", s.addr)
		}
	})
}

// send writes msg to the keeper; k.mu is held. It reports whether the
// keeper got it. A keeper that has exited is not reported here: watch says
// so, and the next one gets what this one held.
func (k *Keeper) send(msg string, oob []byte) bool {
	if k.conn == nil {
		return false
	}
	if _, _, err := k.conn.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
		if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			k.log.Warn("cannot reach the output keeper", "event", "keeper.send_failed", "keeper_pid", k.pid, "msg", msg, "err", err)
		}
		return false
	}
	return true
}
