package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

type config struct {
	rate     int
	duration time.Duration
	upgrades int
	only     string
	// memReloads is how many reloads the memory section makes.
	memReloads int
	slow       time.Duration
	scale      bool
	steady     time.Duration
	rounds     int // restart-speed rounds
	// The handover section: WebSocket clients, releases, and each
	// client's interval between messages.
	hoClients  int
	hoReleases int
	hoInterval time.Duration
	// hoQuiet is how long the handover section measures each client's
	// longest gap between echoes before the first release: the same
	// clients and server without a release, to compare with.
	hoQuiet time.Duration
	// hoModes, if not empty, are the handover section's rows to run, by
	// name (baseline, library, daemon).
	hoModes []string
	// quicClients and quicReleases size the QUIC section.
	quicClients  int
	quicReleases int
	// binDir, if not "", holds the programs as buildBins builds them
	// (the tests build them once for all their runs); else run builds
	// them.
	binDir string
}

// env is what every strategy shares: the built binaries and a scratch
// directory.
type env struct {
	dir  string
	bins map[string]string
	// pidDir is a directory on tmpfs for the pid files of the restart-speed
	// section, as production pid files live in /run; "" if none is found.
	pidDir string
}

var strategyNames = []string{"library", "daemon", "tableflip", "naive", "reuseport"}

// sectionNames are the measures besides the strategies; "listeners" is the
// second half of "scale" alone; "quic" runs in the quic module.
var sectionNames = []string{"speed", "steady", "scale", "listeners", "memory", "peers", "workers", "handover", "quic"}

// row is one strategy's line in the table.
type row struct {
	name      string
	res       *loadcheck.Result
	upgrades  int
	ready     []time.Duration
	drain     []time.Duration
	p99Up     time.Duration
	p99Base   time.Duration
	rssKB     int
	err       error
	firstFail string
}

func run(cfg config, w io.Writer) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	// Generations whose parent exited become ours, to be timed and reaped.
	if err := proc.Subreaper(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "handoff-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	e := &env{dir: dir, bins: map[string]string{}}
	for _, d := range []string{"/run", "/dev/shm"} {
		if onTmpfs(d) {
			if pd, err := os.MkdirTemp(d, "handoff-bench-"); err == nil {
				defer os.RemoveAll(pd)
				e.pidDir = pd
				break
			}
		}
	}
	only := map[string]bool{}
	for _, s := range strings.Split(cfg.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !contains(strategyNames, s) && !contains(sectionNames, s) {
				return fmt.Errorf("--only %s: unknown strategy or section; use %s", s, strings.Join(append(strategyNames, sectionNames...), ","))
			}
			only[s] = true
		}
	}
	// The QUIC section builds its own programs, in the quic module.
	switch {
	case len(only) == 1 && only["quic"]:
	case cfg.binDir != "":
		e.bins = binPaths(cfg.binDir)
	default:
		if e.bins, err = buildBins(root, dir); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "handoff benchmark — %s, nproc %d, %s; per strategy: %d rps for %v, %d upgrades, %v requests in flight\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), cfg.rate, cfg.duration, cfg.upgrades, cfg.slow)
	want := func(name string) bool { return len(only) == 0 || only[name] }
	var rows []row
	for _, name := range strategyNames {
		if !want(name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s…\n", name)
		rows = append(rows, runStrategy(e, cfg, name))
		proc.ReapAll()
	}
	if len(rows) > 0 {
		printTable(w, rows, measureFloor(e, 20))
	}
	if want("speed") && cfg.rounds > 0 {
		fmt.Fprintf(os.Stderr, "bench: restart speed…\n")
		fmt.Fprintln(w)
		printSpeed(w, e, cfg.rounds)
		proc.ReapAll()
	}
	if want("steady") {
		fmt.Fprintf(os.Stderr, "bench: steady state…\n")
		printSteady(w, e, cfg.steady)
	}
	if want("memory") && cfg.memReloads > 0 {
		fmt.Fprintf(os.Stderr, "bench: memory over %d reloads…\n", cfg.memReloads)
		fmt.Fprintln(w)
		printMemory(w, e, cfg.memReloads)
	}
	if want("peers") {
		fmt.Fprintf(os.Stderr, "bench: peers…\n")
		printPeers(w, e, cfg, root)
	}
	if want("workers") {
		fmt.Fprintf(os.Stderr, "bench: workers…\n")
		printWorkers(w, e, cfg, root)
	}
	if want("handover") && cfg.hoClients > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d WebSocket clients through %d releases…\n", cfg.hoClients, cfg.hoReleases)
		printHandover(w, e, cfg)
		proc.ReapAll()
	}
	if want("quic") {
		fmt.Fprintf(os.Stderr, "bench: QUIC…\n")
		printQUIC(w, cfg, root)
	}
	if want("scale") && cfg.scale {
		fmt.Fprintf(os.Stderr, "bench: scale…\n")
		printScale(w, e)
	} else if only["listeners"] {
		fmt.Fprintf(os.Stderr, "bench: 1,000 listeners…\n")
		manyListeners(w, e)
	}
	proc.ReapAll()
	return nil
}

// binPkgs are the programs the benchmark runs, by name, as packages of the
// module.
var binPkgs = map[string]string{
	"httpserver": "./examples/httpserver", "app": "./examples/app", "handoff": ".",
	"tableflip": "./scripts/bench/servers/tableflip", "plain": "./scripts/bench/servers/plain",
	"many": "./scripts/bench/servers/many", "websocket": "./examples/websocket",
}

// ownModules are the programs of binPkgs that are modules of their own,
// built from their directory.
var ownModules = map[string]bool{"./examples/websocket": true}

// binPaths returns where buildBins puts each program in dir.
func binPaths(dir string) map[string]string {
	bins := map[string]string{}
	for name := range binPkgs {
		bins[name] = filepath.Join(dir, name)
	}
	return bins
}

// buildBins builds binPkgs from the module at root into dir and returns
// their paths.
func buildBins(root, dir string) (map[string]string, error) {
	bins := binPaths(dir)
	for name, pkg := range binPkgs {
		build := exec.Command("go", "build", "-o", bins[name], pkg)
		build.Dir = root
		if ownModules[pkg] {
			build = exec.Command("go", "build", "-o", bins[name], ".")
			build.Dir = filepath.Join(root, pkg)
		}
		if name == "handoff" {
			// As it is released (scripts/package): static, without libc,
			// whose pages would add 1.3 MiB to handoff's RSS.
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s: %v\n%s", pkg, err, out)
		}
	}
	return bins, nil
}

// moduleRoot finds the directory of handoff's go.mod, from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/handoff-dev/handoff") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run from within the handoff repository")
		}
		dir = parent
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runStrategy runs one strategy under load and upgrades it at even
// intervals, never before the previous old generation has exited.
func runStrategy(e *env, cfg config, name string) row {
	r := row{name: name}
	s := newServer(e, name)
	if err := s.start(); err != nil {
		r.err = err
		return r
	}
	defer s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	resC := make(chan *loadcheck.Result, 1)
	go func() {
		resC <- loadcheck.Run(ctx, loadcheck.Config{URL: "http://" + s.addr(), Rate: cfg.rate, Slow: cfg.slow, SlowEvery: 100 * time.Millisecond})
	}()
	var marks []time.Time
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := cfg.duration / time.Duration(cfg.upgrades+1)
	begin := time.Now()
	lastOld := make(chan struct{})
	close(lastOld)
	for i := 0; i < cfg.upgrades; i++ {
		at := begin.Add(time.Duration(i+1) * interval)
		time.Sleep(time.Until(at))
		select {
		case <-lastOld:
		case <-ctx.Done():
		}
		// Leave time for the generation to serve before the run ends.
		if time.Until(begin.Add(cfg.duration)) < interval/2 {
			break
		}
		mark := time.Now()
		ready, old, drainFrom, err := s.upgrade()
		if err != nil {
			r.firstFail = err.Error()
			break
		}
		marks = append(marks, mark)
		r.upgrades++
		r.ready = append(r.ready, ready)
		done := make(chan struct{})
		lastOld = done
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			for alive(old) {
				time.Sleep(time.Millisecond)
			}
			mu.Lock()
			r.drain = append(r.drain, time.Since(drainFrom))
			mu.Unlock()
		}()
	}
	r.res = <-resC
	r.rssKB = s.rssKB()
	wg.Wait()
	in, base := r.res.Window(marks, 0, 2*time.Second)
	r.p99Up, r.p99Base = in.P99, base.P99
	return r
}

func printTable(w io.Writer, rows []row, floor []time.Duration) {
	fmt.Fprintln(w, "| strategy | failed requests (by class) | silently retried | upgrades | reload→ready p50 / p99 | p99 latency during upgrades ÷ baseline | old generation drain p50 | handoff RSS |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		if r.err != nil {
			fmt.Fprintf(w, "| %s | could not start: %v | | | | | | |\n", label(r.name), r.err)
			continue
		}
		failed := failures(r.res)
		ratio := "–"
		if r.p99Base > 0 {
			ratio = fmt.Sprintf("%.1f× (%s / %s)", float64(r.p99Up)/float64(r.p99Base), ms(r.p99Up), ms(r.p99Base))
		}
		rss := "–"
		if r.rssKB > 0 {
			rss = fmt.Sprintf("%.1f MiB", float64(r.rssKB)/1024)
		}
		ups := fmt.Sprint(r.upgrades)
		if r.firstFail != "" {
			ups += " (stopped: " + r.firstFail + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s / %s | %s | %s | %s |\n", label(r.name), failed, r.res.Retried, ups,
			ms(pct(r.ready, 50)), ms(pct(r.ready, 99)), ratio, ms(pct(r.drain, 50)), rss)
	}
	fmt.Fprintf(w, "\nfork+exec floor — a new process answers its first request on an inherited fd: p50 %s, p99 %s (%d runs)\n",
		ms(pct(floor, 50)), ms(pct(floor, 99)), len(floor))
}

func label(name string) string {
	return map[string]string{
		"library":   "handoff library (SIGHUP)",
		"daemon":    "handoff daemon (handoff reload)",
		"tableflip": "tableflip, README style",
		"naive":     "naive stop, then start",
		"reuseport": "SO_REUSEPORT overlap",
	}[name]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p/100)]
}

// alive reports whether pid runs, reaping it if it is an exited child.
func alive(pid int) bool {
	if proc.Alive(pid) {
		return true
	}
	proc.Reap(pid)
	return false
}

// rssKB returns VmRSS of pid in KiB.
func rssKB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// onTmpfs reports whether dir is on a tmpfs.
func onTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}
