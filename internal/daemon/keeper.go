package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What a generation does when handoff dies. Each generation is started with
// its stop signal as its parent-death signal (PR_SET_PDEATHSIG): if handoff
// is killed (SIGKILL, the OOM killer), the generations drain and exit as on
// a stop, and the sockets close with them, so that a handoff started again
// can bind them. Their output goes through pipes that handoff reads; a pipe
// whose reader is gone would fail their next write (and kill a Go program,
// which dies of SIGPIPE on a failed write to fd 1 or 2). So a keeper — handoff
// itself, re-executed with KeeperCommand — holds a copy of each pipe's read
// end, reads nothing while handoff lives, and when handoff dies copies what
// the generations still write to the output handoff had, until they have all
// exited. It costs one small idle process; handoff says "bye" to it when it
// exits.

// KeeperCommand is the hidden first argument with which handoff starts its
// output keeper.
const KeeperCommand = "__handoff_keeper"

// Keeper runs the output keeper: fd 3 is a SOCK_SEQPACKET socket from
// handoff, on which it gets "hold N PID" with the read ends of generation N's
// stdout and stderr pipes (PID leads its process group), "drop N" when that generation has exited, and
// "bye" when handoff exits. If the socket ends without "bye", handoff died:
// the keeper copies what the pipes it holds carry to its own stdout and
// stderr (handoff's) until each ends, then exits 0.
func Keeper(stderr io.Writer) int {
	// A Ctrl-C or a stop aimed at handoff's process group is handoff's to
	// handle; the keeper follows handoff.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
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
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(2*4))
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			break // handoff is gone
		}
		var files []*os.File
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.CloseOnExec(fd)
					files = append(files, os.NewFile(uintptr(fd), "generation output"))
				}
			}
		}
		f := strings.Fields(string(buf[:n]))
		switch {
		case len(f) == 1 && f[0] == "bye":
			return 0
		case len(f) == 3 && f[0] == "hold" && len(files) == 2:
			held[f[1]] = files
			pgids[f[1]], _ = strconv.Atoi(f[2])
			continue
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
	wg.Wait()
	return 0
}

// keeper is handoff's end of the output keeper; nil where none runs (its
// methods do nothing then).
type keeper struct {
	log    *slog.Logger
	conn   *net.UnixConn
	exited chan struct{} // closed once the keeper has exited
	mu     sync.Mutex
	dead   bool
}

// startKeeper starts the output keeper, a child of handoff in its process
// group, recorded with the reaper as handoff's own.
func startKeeper(self string, r *reaper, log *slog.Logger) (*keeper, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "keeper"), os.NewFile(uintptr(fds[1]), "keeper")
	defer theirs.Close()
	defer mine.Close()
	cmd := exec.Command(self, KeeperCommand)
	cmd.Args[0] = "handoff-keeper"
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := r.start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	}); err != nil {
		return nil, fmt.Errorf("starting the output keeper: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); r.done(cmd.Process.Pid); close(exited) }()
	c, err := net.FileConn(mine)
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return &keeper{log: log, conn: c.(*net.UnixConn), exited: exited}, nil
}

// hold gives the keeper copies of the output pipes' read ends of generation
// n, whose process group pid leads.
func (k *keeper) hold(key string, pid int, stdout, stderr *os.File) {
	if k == nil {
		return
	}
	var fds []int
	for _, f := range []*os.File{stdout, stderr} {
		raw, err := f.SyscallConn()
		if err != nil {
			return
		}
		_ = raw.Control(func(fd uintptr) { fds = append(fds, int(fd)) })
	}
	k.send(fmt.Sprintf("hold %s %d", key, pid), unix.UnixRights(fds...))
}

// drop tells the keeper that generation n has exited.
func (k *keeper) drop(key string) {
	if k != nil {
		k.send("drop "+key, nil)
	}
}

// bye tells the keeper that handoff exits, closes the socket, and waits up
// to a second for the keeper to exit, so that handoff leaves nothing behind.
func (k *keeper) bye() {
	if k == nil {
		return
	}
	k.send("bye", nil)
	k.conn.Close()
	select {
	case <-k.exited:
	case <-time.After(time.Second):
		k.log.Warn("the output keeper did not exit within a second of handoff's goodbye", "event", "keeper.slow_exit")
	}
}

func (k *keeper) send(msg string, oob []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return
	}
	if _, _, err := k.conn.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
		k.dead = true
		k.log.Warn("the output keeper is gone: if handoff dies, the generations' next writes to their output will fail", "event", "keeper.gone", "err", err)
	}
}
