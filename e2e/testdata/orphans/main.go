// Command orphans leaves processes behind, as a detached helper does: with
// -sleep D it ignores SIGTERM and SIGINT (so that the stop signal sent to
// its process group with the program's does not end it), waits until its
// parent has exited (it is then an orphan, however long the parent lived),
// sleeps D and exits;
// otherwise it starts $ORPHANS copies of itself with -sleep 3s, waits for
// none of them, and execs the program its arguments name. When that
// program exits, its children become the orphans of PID 1.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-sleep" {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		d, _ := time.ParseDuration(os.Args[2])
		// A fixed sleep from the start ran out before a slow reload
		// ended the parent, and the orphan never was one.
		parent := os.Getppid()
		for deadline := time.Now().Add(time.Minute); os.Getppid() == parent && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(d)
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: orphans PROGRAM [ARGS...]")
		os.Exit(2)
	}
	n, _ := strconv.Atoi(os.Getenv("ORPHANS"))
	for range n {
		if err := exec.Command("/proc/self/exe", "-sleep", "3s").Start(); err != nil {
			fmt.Fprintln(os.Stderr, "orphans:", err)
			os.Exit(1)
		}
	}
	if err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "orphans:", err)
		os.Exit(1)
	}
}
