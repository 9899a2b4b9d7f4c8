package main

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// printMemory reloads one `handoff run` of examples/app n times, one after
// another, and reports its RSS and descriptors along the way: what each
// generation leaves behind in handoff shows as growth after the first
// hundred reloads, which warm up Go's runtime.
func printMemory(w io.Writer, e *env, n int) {
	b := &base{e: e, dir: mustTemp(e.dir, "memory"), address: freeAddr()}
	control := filepath.Join(b.dir, "control.sock")
	cmd, err := b.launch(e.bins["handoff"], "run", "--control", control, "--listen", "web="+b.address, "--", e.bins["app"])
	if err != nil {
		fmt.Fprintf(w, "memory: %v\n", err)
		return
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait(); proc.ReapAll() }()
	pid := cmd.Process.Pid
	reload := func() error {
		out, err := exec.Command(e.bins["handoff"], "reload", "--control", control).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	// The first generation is ready once a status shows it serving.
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command(e.bins["handoff"], "status", "--control", control).Run() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(w, "handoff run's memory over %d reloads in a row (static build, examples/app, no load):\n", n)
	fmt.Fprintf(w, "  %5s  %9s  %3s\n", "after", "RSS", "fds")
	row := func(i int) int {
		kb := rssKB(pid)
		fmt.Fprintf(w, "  %5d  %5.1f MiB  %3d\n", i, float64(kb)/1024, proc.FDCount(pid))
		return kb
	}
	row(0)
	var at100 int
	start := time.Now()
	for i := 1; i <= n; i++ {
		if err := reload(); err != nil {
			fmt.Fprintf(w, "  reload %d: %v\n", i, err)
			return
		}
		if i == 100 || i%250 == 0 || i == n {
			time.Sleep(100 * time.Millisecond) // the last old generation's exit handled
			kb := row(i)
			if i == 100 {
				at100 = kb
			}
			if i == n && n > 100 {
				fmt.Fprintf(w, "  growth after the first 100: %.2f KiB per reload (%d reloads in %v)\n",
					float64(kb-at100)/float64(n-100), n, time.Since(start).Round(time.Millisecond))
			}
		}
	}
}
