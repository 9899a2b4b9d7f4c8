//go:build linux

package procfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// waitKind says where a waiting system call names its descriptors.
type waitKind int

const (
	waitFD     waitKind = iota + 1 // the first argument is the descriptor (accept, recvmsg, read)
	waitPoll                       // poll/ppoll: an array of struct pollfd, and its length
	waitSelect                     // select/pselect6: nfds, then the read fd_set
)

// Limits on what is read from a process's memory for one waiting call.
const (
	maxPollFDs  = 4096
	maxSelectFD = 1 << 16
)

// Waiters finds, among the processes of the tree rooted at root (its
// descendants and the members of its process group), the sockets of inodes
// that some process waits to accept (or receive) on. A socket counts when
//
//   - it is in one of the process's epoll sets with EPOLLIN (Go, Node.js,
//     Python asyncio, Ruby's and Java's NIO selectors, nginx, libuv,
//     libevent): /proc/PID/fdinfo of the epoll descriptor lists it by inode;
//   - a thread is blocked in accept/accept4 (or recv*, read) on it: the call
//     and its first argument are in /proc/PID/task/TID/syscall;
//   - a thread is blocked in poll/ppoll or select/pselect6 with it among the
//     descriptors read (Python's socketserver, many C servers): the pollfd
//     array or fd_set is read from /proc/PID/mem.
//
// It returns the inodes found. notes carries what could not be inspected
// (a process whose memory handoff may not read), for the failure message.
//
// With tree false, only root is inspected: the cheap look, which finds a
// program that serves in its own process; ProcessTree reads every
// /proc/PID/stat.
func Waiters(root int, inodes map[uint64]bool, tree bool) (found map[uint64]bool, notes []string, err error) {
	pids := []int{root}
	if tree {
		if pids, err = ProcessTree(root); err != nil {
			return nil, nil, err
		}
	}
	found = map[uint64]bool{}
	for _, pid := range pids {
		n, err := processWaits(pid, inodes, found)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // it exited meanwhile
			}
			notes = append(notes, err.Error())
			continue
		}
		notes = append(notes, n...)
	}
	return found, notes, nil
}

// ProcessTree returns root, its descendants and the members of its process
// group, from one pass over /proc.
func ProcessTree(root int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("reading /proc: %w", err)
	}
	children := map[int][]int{}
	in := map[int]bool{root: true}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, ppid, pgrp, ok := Stat(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		if pgrp == root {
			in[pid] = true
		}
	}
	queue := make([]int, 0, len(in))
	for p := range in {
		queue = append(queue, p)
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !in[c] {
				in[c] = true
				queue = append(queue, c)
			}
		}
	}
	out := make([]int, 0, len(in))
	for p := range in {
		out = append(out, p)
	}
	return out, nil
}

// readSmall reads the start of a small file into buf with three system
// calls (os.ReadFile makes twice as many, which counts when every process's
// stat is read 20 times a second).
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return buf[:n], nil
}

// processWaits adds to found the inodes (among want) that pid waits on.
func processWaits(pid int, want, found map[uint64]bool) (notes []string, err error) {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, err := Descriptors(strconv.Itoa(pid))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	fdIno := map[int]uint64{}
	var epolls []string
	for fd, link := range fds {
		if n, ok := SocketInode(link); ok && want[n] {
			fdIno[fd] = n
		} else if link == "anon_inode:[eventpoll]" {
			epolls = append(epolls, strconv.Itoa(fd))
		}
	}
	if len(fdIno) == 0 {
		// It holds none of the sockets (any more): nothing it waits on
		// can be one of them.
		return nil, nil
	}
	for _, ep := range epolls {
		epollTargets(dir+"/fdinfo/"+ep, want, found)
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/task/" + t.Name() + "/syscall")
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				notes = append(notes, fmt.Sprintf("pid %d: %v", pid, err))
			}
			continue
		}
		nr, args, ok := parseSyscall(b)
		if !ok {
			continue // running, or not in a system call
		}
		fds, err := waitedFDs(dir, waitCalls[nr], args)
		if err != nil {
			notes = append(notes, fmt.Sprintf("pid %d: %v", pid, err))
			continue
		}
		for _, fd := range fds {
			if ino, ok := fdIno[fd]; ok {
				found[ino] = true
			}
		}
	}
	return notes, nil
}

// epollTargets adds to found the inodes among want that the epoll set
// described by the fdinfo file at path watches for input. Its lines read
// "tfd: 5 events: 19 data: 5 pos:0 ino:1031 sdev:9", numbers but tfd in hex.
func epollTargets(path string, want, found map[uint64]bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tfd:") {
			continue
		}
		var events, ino uint64
		var haveEvents, haveIno bool
		fields := strings.Fields(strings.ReplaceAll(line, ":", ": "))
		for i := 0; i+1 < len(fields); i++ {
			switch fields[i] {
			case "events:":
				events, err = strconv.ParseUint(fields[i+1], 16, 32)
				haveEvents = err == nil
			case "ino:":
				ino, err = strconv.ParseUint(fields[i+1], 16, 64)
				haveIno = err == nil
			}
		}
		const epollIn = 0x1
		if haveEvents && haveIno && events&epollIn != 0 && want[ino] {
			found[ino] = true
		}
	}
}

// parseSyscall parses /proc/PID/task/TID/syscall: "NR ARG1 … ARG6 SP PC"
// while the thread is in a system call, "running" or "-1 SP PC" otherwise.
func parseSyscall(b []byte) (nr int, args [6]uint64, ok bool) {
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return 0, args, false
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil || nr < 0 {
		return 0, args, false
	}
	for i := range args {
		if args[i], err = strconv.ParseUint(strings.TrimPrefix(f[i+1], "0x"), 16, 64); err != nil {
			return 0, args, false
		}
	}
	return nr, args, true
}

// waitedFDs returns the descriptors a call of kind waits to read on.
func waitedFDs(dir string, kind waitKind, args [6]uint64) ([]int, error) {
	switch kind {
	case waitFD:
		return []int{int(int32(args[0]))}, nil
	case waitPoll:
		n := min(args[1], maxPollFDs)
		if args[0] == 0 || n == 0 {
			return nil, nil
		}
		b, err := readMem(dir, args[0], int(n)*8)
		if err != nil {
			return nil, err
		}
		var fds []int
		for i := 0; i+8 <= len(b); i += 8 {
			// struct pollfd { int fd; short events; short revents; }
			fd := int32(binary.NativeEndian.Uint32(b[i:]))
			events := binary.NativeEndian.Uint16(b[i+4:])
			const pollIn, pollRdNorm = 0x1, 0x40
			if fd >= 0 && events&(pollIn|pollRdNorm) != 0 {
				fds = append(fds, int(fd))
			}
		}
		return fds, nil
	case waitSelect:
		nfds := min(args[0], maxSelectFD)
		if args[1] == 0 || nfds == 0 {
			return nil, nil
		}
		b, err := readMem(dir, args[1], int((nfds+63)/64*8))
		if err != nil {
			return nil, err
		}
		var fds []int
		for fd := 0; fd < int(nfds) && fd/8 < len(b); fd++ {
			// fd_set is an array of 64-bit longs: bit fd%64 of long fd/64.
			word := binary.NativeEndian.Uint64(b[fd/64*8:])
			if word&(1<<(fd%64)) != 0 {
				fds = append(fds, fd)
			}
		}
		return fds, nil
	}
	return nil, nil
}

// readMem reads n bytes at addr of the process whose /proc directory is dir.
func readMem(dir string, addr uint64, n int) ([]byte, error) {
	f, err := os.Open(dir + "/mem")
	if err != nil {
		return nil, fmt.Errorf("reading its memory: %w", err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return nil, fmt.Errorf("reading its memory: %w", err)
	}
	return b, nil
}

// SocketInodes returns the inodes of the sockets the processes pids hold.
func SocketInodes(pids []int) map[uint64]bool {
	out := map[uint64]bool{}
	for _, pid := range pids {
		fds, _ := Descriptors(strconv.Itoa(pid))
		for _, link := range fds {
			if ino, ok := SocketInode(link); ok {
				out[ino] = true
			}
		}
	}
	return out
}
