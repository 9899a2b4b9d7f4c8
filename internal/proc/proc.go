// Package proc holds the process and socket helpers that handoff's tests
// and benchmarks share: free ports, executables written as a deploy writes
// them, and the state of processes in /proc.
package proc

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FreeAddr returns a loopback address with a port nothing listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WriteExec writes an executable file the way a deploy does: to a temporary
// name, then renamed over dst, so that a running process keeps its binary.
func WriteExec(t testing.TB, dst string, b []byte) {
	t.Helper()
	// A process another goroutine forks while the file is open for writing
	// holds that descriptor until it execs, and exec'ing the file then
	// fails with ETXTBSY ("text file busy": parallel tests that start
	// programs). ForkLock keeps forks out while the descriptor is open.
	syscall.ForkLock.Lock()
	err := os.WriteFile(dst+".tmp", b, 0o755)
	syscall.ForkLock.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		t.Fatal(err)
	}
}

// CopyExec copies the executable src to dst with WriteExec.
func CopyExec(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	WriteExec(t, dst, b)
}

// Flip points the symlink link at target the way a deploy flips a
// `current` symlink: a new link beside it, renamed over it.
func Flip(t testing.TB, link, target string) {
	t.Helper()
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// ReadPid returns the pid written in the file at path, or 0.
func ReadPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Stat returns the state letter (R, S, Z, …) and parent pid of pid, and
// whether it exists.
func Stat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

// Alive reports whether pid runs and is not a zombie.
func Alive(pid int) bool {
	st, _, ok := Stat(pid)
	return ok && st != "Z"
}

// Reap collects pid if it is an exited child of this process.
func Reap(pid int) {
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

// ReapAll collects every exited child of this process.
func ReapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// Descendants returns the live processes below pid.
func Descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, pp, ok := Stat(p); ok && st != "Z" {
			parent[p] = pp
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// ChildOf returns a live child of pid, or 0: for a process started under
// unshare --fork, the one that runs in the namespace.
func ChildOf(pid int) int {
	if c := Children(pid); len(c) > 0 {
		return c[0]
	}
	return 0
}

// Children returns the live (not zombie) children of pid, sorted. It reads
// the kernel's lists of each thread's children, and only where the kernel
// keeps none (CONFIG_PROC_CHILDREN) walks every process in /proc.
func Children(pid int) []int {
	var out []int
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	listed := err == nil
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/children")
		if err != nil {
			if os.IsNotExist(err) && t.Name() == strconv.Itoa(pid) {
				listed = false // no such file on this kernel
			}
			continue // else a thread that exited meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				if st, _, ok := Stat(c); ok && st != "Z" {
					out = append(out, c)
				}
			}
		}
	}
	if !listed {
		for _, c := range Descendants(pid) {
			if _, pp, _ := Stat(c); pp == pid {
				out = append(out, c)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Subreaper makes this process adopt its orphaned descendants, so that a
// test sees every generation exit and can reap it.
func Subreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// FDCount returns how many descriptors process pid holds, or -1 if its
// /proc/PID/fd cannot be read.
func FDCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// FDCountBut returns how many descriptors process pid holds other than its
// TCP connections (the sockets its /proc/PID/net/tcp and tcp6 list in a
// state other than LISTEN), or -1 if its fd table cannot be read: a leak
// check that a client's connections coming and going do not disturb, and
// that still counts every copy of a listening socket.
func FDCountBut(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	tcp := map[string]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 9 && f[3] != "0A" { // 0A: TCP_LISTEN
				tcp["socket:["+f[9]+"]"] = true
			}
		}
	}
	n := 0
	for _, e := range ents {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err == nil && tcp[link] {
			continue
		}
		n++
	}
	return n
}

// markVar is the environment variable Mark sets and KillMarked looks for.
const markVar = "HANDOFF_PROC_TEST_MARK"

// Mark gives every process cmd starts, and whatever those start in turn
// (orphans too), the mark in its environment, so that KillMarked finds them
// among the processes of other tests running alongside. A process that
// clears its environment before exec loses it.
func Mark(cmd *exec.Cmd, mark string) {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, markVar+"="+mark)
}

// Marked returns the live (not zombie) processes whose environment
// carries mark (see Mark): what is left of a test's processes, and nothing
// of a test running alongside.
func Marked(mark string) []int {
	return scanMarked(mark, nil)
}

// scanMarked returns the live processes that carry mark, calling each (if
// not nil) with every zombie found on the way.
func scanMarked(mark string, zombie func(pid, ppid int)) []int {
	want := []byte(markVar + "=" + mark + "\x00")
	self := os.Getpid()
	var live []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == self {
			continue
		}
		st, pp, ok := Stat(p)
		if !ok {
			continue
		}
		if st == "Z" {
			if zombie != nil {
				zombie(p, pp)
			}
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		live = append(live, p)
	}
	return live
}

// KillMarked kills every live process whose environment carries mark (see
// Mark) and reaps those that are this process's children — its own, and
// orphans re-parented to it as a subreaper — until none is left or 10 s
// have passed. Unlike ReapAll it takes no other process's exit status, so
// the exec.Cmd.Wait of a test running alongside still gets its own. It
// returns the processes still alive at the deadline.
func KillMarked(mark string) []int {
	seen := map[int]bool{}
	self := os.Getpid()
	reap := func(p, pp int) {
		if seen[p] && pp == self {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p, &ws, unix.WNOHANG, nil)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		live := scanMarked(mark, reap)
		for _, p := range live {
			seen[p] = true
			_ = unix.Kill(p, unix.SIGKILL)
		}
		if len(live) == 0 {
			// The last round's zombies are reaped above; one more pass
			// takes those that died after their scan.
			reapSeen(seen, self)
			return nil
		}
		if time.Now().After(deadline) {
			return live
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reapSeen reaps the processes of seen that are this process's zombies.
func reapSeen(seen map[int]bool, self int) {
	for p := range seen {
		if st, pp, ok := Stat(p); ok && st == "Z" && pp == self {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p, &ws, unix.WNOHANG, nil)
		}
	}
}
