// Command upgradebench measures zero-downtime upgrades under load: it drives
// a server with an open-loop POST load, upgrades it N times with SIGHUP, and
// prints the failed and retried requests and how long each upgrade took,
// from the SIGHUP to the READY=1 that systemd would receive, and to the old
// generation's exit. -mode library runs examples/httpserver (the upgrader
// package); -mode daemon runs examples/app under `handoff run`.
//
//	go run ./scripts/upgradebench -upgrades 100 -rate 500
//	go run ./scripts/upgradebench -mode daemon -upgrades 100
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	idleGrace := flag.Duration("idle-grace", time.Second, "the server's -idle-grace (library mode)")
	mode := flag.String("mode", "library", "library (examples/httpserver) or daemon (handoff run with examples/app)")
	flag.Parse()
	log.SetFlags(0)
	if *mode != "library" && *mode != "daemon" {
		log.Fatalf("upgradebench: -mode %q: use library or daemon", *mode)
	}
	if err := run(*mode, *upgrades, *rate, *slow, *idleGrace); err != nil {
		log.Fatalf("upgradebench: %v", err)
	}
}

func run(mode string, upgrades, rate int, slow, idleGrace time.Duration) error {
	dir, err := os.MkdirTemp("", "upgradebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, b := range [][2]string{{"httpserver", "./examples/httpserver"}, {"app", "./examples/app"}, {"handoff", "."}} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b[0]), b[1]).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s (run from the repository root): %v\n%s", b[1], err, out)
		}
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
	cmd := exec.Command(filepath.Join(dir, "httpserver"), "-addr", addr, "-idle-grace", idleGrace.String())
	control := filepath.Join(dir, "control.sock")
	if mode == "daemon" {
		cmd = exec.Command(filepath.Join(dir, "handoff"), "run", "--control", control, "--max-draining", "64",
			"--listen", "web="+addr, "--", filepath.Join(dir, "app"))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	// The first READY=1 carries no MAINPID: the first pid is the child's.
	pid := cmd.Process.Pid
	handoffPid := pid
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
		old := pid
		if mode == "daemon" {
			if old, err = servingPid(filepath.Join(dir, "handoff"), control); err != nil {
				return err
			}
		}
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
		if mode == "library" {
			pid = next
		}
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
	samePid := alive(handoffPid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for alive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	reap(pid)

	fmt.Printf("mode %s", mode)
	if mode == "daemon" {
		fmt.Printf(" (handoff pid %d throughout: %v)", handoffPid, samePid)
	}
	fmt.Printf(", %d rps, slow requests %v, nproc %d\n\n", rate, slow, runtime.NumCPU())
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

// servingPid asks `handoff status` for the serving generation's pid.
func servingPid(handoff, control string) (int, error) {
	out, err := exec.Command(handoff, "status", "--json", "--control", control).Output()
	if err != nil {
		return 0, fmt.Errorf("handoff status: %v", err)
	}
	var st struct {
		Generations []struct {
			PID   int    `json:"pid"`
			State string `json:"state"`
		} `json:"generations"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, err
	}
	for _, g := range st.Generations {
		if g.State == "serving" {
			return g.PID, nil
		}
	}
	return 0, fmt.Errorf("no serving generation: %s", out)
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
		if !strings.Contains(msg, "READY=1") || strings.Contains(msg, "upgrade failed") || strings.Contains(msg, "reload failed") {
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
