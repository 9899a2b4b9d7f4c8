// Command upgradebench measures the library mode under load: it builds
// examples/httpserver, drives it with an open-loop POST load, upgrades it N
// times with SIGHUP, and prints the failed and retried requests and how long
// each upgrade took, from the SIGHUP to the MAINPID=…/READY=1 that systemd
// would receive, and to the old generation's exit.
//
//	go run ./scripts/upgradebench -upgrades 100 -rate 500
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/loadcheck"
)

func main() {
	upgrades := flag.Int("upgrades", 100, "number of SIGHUP upgrades")
	rate := flag.Int("rate", 500, "fast POST requests per second")
	slow := flag.Duration("slow", 500*time.Millisecond, "duration of the slow requests kept in flight (0: none)")
	idleGrace := flag.Duration("idle-grace", time.Second, "the server's -idle-grace")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*upgrades, *rate, *slow, *idleGrace); err != nil {
		log.Fatalf("upgradebench: %v", err)
	}
}

func run(upgrades, rate int, slow, idleGrace time.Duration) error {
	dir, err := os.MkdirTemp("", "upgradebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "httpserver")
	if out, err := exec.Command("go", "build", "-o", bin, "./examples/httpserver").CombinedOutput(); err != nil {
		return fmt.Errorf("building examples/httpserver (run from the repository root): %v\n%s", err, out)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return err
	}
	mainpid := make(chan int, 16)
	go readNotify(notify, mainpid)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-addr", addr, "-idle-grace", idleGrace.String())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	// The first READY=1 carries no MAINPID: the first pid is the child's.
	pid := cmd.Process.Pid
	select {
	case <-mainpid:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("server not ready after 10s; see %s", logf.Name())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resC := make(chan *loadcheck.Result, 1)
	cfg := loadcheck.Config{URL: "http://" + addr, Rate: rate, Slow: slow, SlowEvery: 100 * time.Millisecond}
	go func() { resC <- loadcheck.Run(ctx, cfg) }()
	time.Sleep(time.Second)

	var ready, exited []time.Duration
	for i := 0; i < upgrades; i++ {
		start := time.Now()
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return err
		}
		var next int
		select {
		case next = <-mainpid:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("upgrade %d: no MAINPID after 30s", i+1)
		}
		ready = append(ready, time.Since(start))
		old := pid
		pid = next
		// Wait for the old generation to exit, so that the next SIGHUP is
		// not queued behind its drain.
		for alive(old) {
			time.Sleep(time.Millisecond)
		}
		exited = append(exited, time.Since(start))
		reap(old)
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	res := <-resC
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for alive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	reap(pid)

	fmt.Printf("| upgrades | requests | failed | retried | pids answered | SIGHUP→ready p50 | p99 | max | SIGHUP→old exited p50 | p99 | request p50 | p99 |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Printf("| %d | %d | %d %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n",
		upgrades, res.Sent, res.Failures(), classes(res.Failed), res.Retried, len(res.Pids),
		ms(pct(ready, 50)), ms(pct(ready, 99)), ms(pct(ready, 100)), ms(pct(exited, 50)), ms(pct(exited, 99)),
		ms(res.Percentile(50)), ms(res.Percentile(99)))
	if res.Failures() > 0 {
		fmt.Printf("failure samples: %q\n", res.Samples)
	}
	return nil
}

func readNotify(conn *net.UnixConn, mainpid chan<- int) {
	buf, oob := make([]byte, 4096), make([]byte, 256)
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, cm := range cmsgs {
			if fds, err := unix.ParseUnixRights(&cm); err == nil {
				for _, fd := range fds {
					unix.Close(fd) // acknowledge BARRIER=1
				}
			}
		}
		msg := string(buf[:n])
		if !strings.Contains(msg, "READY=1") || strings.Contains(msg, "upgrade failed") {
			continue
		}
		pid := 0
		for _, l := range strings.Split(msg, "\n") {
			if v, ok := strings.CutPrefix(l, "MAINPID="); ok {
				pid, _ = strconv.Atoi(v)
			}
		}
		mainpid <- pid
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func reap(pid int) {
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func classes(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return "(" + strings.Join(parts, ", ") + ")"
}
