//go:build linux

package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Cmdline returns pid's command line, its words joined by spaces, at most 80
// bytes.
func Cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// ForEachChild calls f with the pid, state, parent and process group of
// each child of this process. Its threads' /proc/self/task/TID/children list
// them, which costs a read per thread and per child, not a scan of every
// process on the host once a second; a kernel without those files
// (CONFIG_PROC_CHILDREN) gets the scan.
func ForEachChild(f func(pid int, state string, ppid, pgid int)) {
	if !childrenFiles() {
		ForEachProc(f)
		return
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue // a thread that has exited meanwhile
		}
		for _, field := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(field); err == nil {
				if state, ppid, pgid, ok := Stat(pid); ok {
					f(pid, state, ppid, pgid)
				}
			}
		}
	}
}

// childrenFiles reports whether the kernel lists a thread's children in
// /proc/PID/task/TID/children.
var childrenFiles = sync.OnceValue(func() bool {
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d/children", os.Getpid()))
	return err == nil
})

// ForEachProc calls f with the pid, state, parent and process group of
// every process in /proc.
func ForEachProc(f func(pid int, state string, ppid, pgid int)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid, pgid, ok := Stat(p); ok {
			f(p, state, ppid, pgid)
		}
	}
}

// Stat reads the state, parent and process group of pid from
// /proc/PID/stat.
func Stat(pid int) (state string, ppid, pgid int, ok bool) {
	var buf [512]byte
	b, err := readSmall("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		return "", 0, 0, false
	}
	// The command name, in parentheses, may hold spaces and parentheses;
	// then ") S PPID PGRP …": the state, the parent, the process group.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, 0, false
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 3 {
		return "", 0, 0, false
	}
	ppid, err1 := strconv.Atoi(fs[1])
	pgid, err2 := strconv.Atoi(fs[2])
	return fs[0], ppid, pgid, err1 == nil && err2 == nil
}

// ZombieChildren lists the children of this process that have exited and
// wait to be reaped.
func ZombieChildren(pid int) []int {
	var out []int
	ForEachChild(func(p int, state string, ppid, _ int) {
		if state == "Z" && ppid == pid {
			out = append(out, p)
		}
	})
	return out
}

// Descriptors returns the open descriptors of process pid (a number, or
// "self") and where each leads, as /proc/PID/fd has it: "socket:[INODE]",
// "anon_inode:[eventpoll]", a path. A descriptor closed while it is read is
// left out.
func Descriptors(pid string) (map[int]string, error) {
	dir := "/proc/" + pid + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(dir + e.Name()); err == nil {
			out[fd] = link
		}
	}
	return out, nil
}

// SocketInode returns the inode of the socket a descriptor's link
// ("socket:[INODE]") names, and whether it names one.
func SocketInode(link string) (uint64, bool) {
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return ino, err == nil
}
