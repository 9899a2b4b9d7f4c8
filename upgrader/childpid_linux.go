package upgrader

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// childHolding returns the pid of a child of this process that holds the
// socket whose inode is ino, or 0: the new generation, which holds its end
// of the control channel from its start, before it can say its pid itself.
func childHolding(ino uint64) int {
	if ino == 0 {
		return 0
	}
	self := os.Getpid()
	target := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		dir := filepath.Dir(p)
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && l == target {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				return pid
			}
		}
	}
	return 0
}
