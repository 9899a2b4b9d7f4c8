package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// A workersCase is one way to run the CPU-bound Node.js app (servers/node/
// cpu.js) on every core: handoff run with --workers, or PM2's cluster mode.
type workersCase struct {
	peer
	root func(p *peerRun) int // the process whose tree is the service, for its memory
}

func workersCases(root string) []workersCase {
	script := filepath.Join(root, "scripts/bench/servers/node/cpu.js")
	handoffRun := func(workers, surge int) workersCase {
		c := workersCase{peer: handoffRunPeer(script, "--workers", fmt.Sprint(workers), "--max-surge", fmt.Sprint(surge)),
			root: func(p *peerRun) int { return p.main.Process.Pid }}
		c.label = fmt.Sprintf("handoff run --workers %d --max-surge %d", workers, surge)
		return c
	}
	pm2 := workersCase{peer: pm2Peer(script), root: func(p *peerRun) int { return proc.ReadPid(filepath.Join(p.dir, "pm2", "pm2.pid")) }}
	pm2.label = "PM2 cluster mode, 2 instances, `pm2 reload` (the same app and drain, wait_ready)"
	return []workersCase{handoffRun(1, 1), handoffRun(2, 1), handoffRun(2, 2), pm2}
}

// workersRow is one case's line in the table.
type workersRow struct {
	label, missing string
	rps            float64
	res            *loadcheck.Result
	reloads        []time.Duration
	steadyKB       int // the service's resident memory before the reloads
	peakKB         int // and at most during them
	err            error
}

// treeKB sums the resident memory of pid and its descendants.
func treeKB(pid int) int {
	if pid <= 0 {
		return 0
	}
	kb := rssKB(pid)
	for _, d := range proc.Descendants(pid) {
		kb += rssKB(d)
	}
	return kb
}

// runWorkersCase measures c: its throughput saturated for cfg.steady, then
// cfg.upgrades reloads one after another under an open-loop load at *rate,
// its memory sampled meanwhile. The first case sets *rate to half its
// throughput: one worker's, so that every case serves it with room to spare.
func runWorkersCase(e *env, cfg config, c workersCase, rate *int) workersRow {
	r := workersRow{label: c.label}
	for _, n := range c.needs {
		if _, err := exec.LookPath(n); err != nil {
			r.missing = fmt.Sprintf("not installed: `%s`", c.install)
			return r
		}
	}
	p := &peerRun{e: e, dir: mustTemp(e.dir, "workers"), addr: freeAddr()}
	defer c.stop(p)
	if err := c.start(p); err != nil {
		r.err = err
		return r
	}
	// Warm up (V8 compiles the handler), then saturate.
	warm, cancelWarm := context.WithTimeout(context.Background(), time.Second)
	loadcheck.Saturate(warm, "http://"+p.addr+"/", 16)
	cancelWarm()
	sat, cancelSat := context.WithTimeout(context.Background(), cfg.steady)
	r.rps, _ = loadcheck.Saturate(sat, "http://"+p.addr+"/", 16)
	cancelSat()
	if *rate == 0 {
		*rate = max(int(r.rps/2), 20)
	}
	r.steadyKB = treeKB(c.root(p))

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + p.addr, Rate: *rate, Slow: cfg.slow, SlowEvery: 100 * time.Millisecond})
	var mu sync.Mutex
	sampling, stopSampling := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sampling.Err() == nil {
			kb := treeKB(c.root(p))
			mu.Lock()
			r.peakKB = max(r.peakKB, kb)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := load.WaitAnswers(0, *rate/2, 10*time.Second); err != nil {
		r.err = err
	}
	for i := 0; i < cfg.upgrades && r.err == nil; i++ {
		start := time.Now()
		if err := c.reload(p); err != nil {
			r.err = err
			break
		}
		r.reloads = append(r.reloads, time.Since(start))
		time.Sleep(500 * time.Millisecond) // serve a moment between reloads
	}
	time.Sleep(2 * time.Second) // the load runs on through the last drains
	cancel()
	r.res = load.Wait()
	stopSampling()
	wg.Wait()
	return r
}

func printWorkers(w io.Writer, e *env, cfg config, root string) {
	cases := workersCases(root)
	rows := make([]workersRow, 0, len(cases))
	rate := 0
	for _, c := range cases {
		fmt.Fprintf(os.Stderr, "bench: workers: %s…\n", c.label)
		rows = append(rows, runWorkersCase(e, cfg, c, &rate))
		proc.ReapAll()
	}
	fmt.Fprintf(w, "\nWorkers — a CPU-bound Node.js handler (PBKDF2 per request) on %d cores: saturated throughput (16 connections, %v), then %d reloads one after another under %d req/s open-loop (half of one worker's throughput) with %v requests in flight\n\n",
		runtime.NumCPU(), cfg.steady, cfg.upgrades, rate, cfg.slow)
	fmt.Fprintln(w, "| setup | throughput | failed requests (by class) | silently retried | reloads | reload time p50 / max | service memory steady / peak |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	base := 0.0
	for _, r := range rows {
		switch {
		case r.missing != "":
			fmt.Fprintf(w, "| %s | %s | | | | | |\n", r.label, r.missing)
			continue
		case r.res == nil:
			fmt.Fprintf(w, "| %s | could not start: %v | | | | | |\n", r.label, r.err)
			continue
		}
		if base == 0 {
			base = r.rps
		}
		reloads := fmt.Sprint(len(r.reloads))
		if r.err != nil {
			reloads += fmt.Sprintf(" (stopped: %v)", r.err)
		}
		fmt.Fprintf(w, "| %s | %.0f req/s (%.2f×) | %s | %d | %s | %s / %s | %.1f / %.1f MiB |\n", r.label, r.rps, r.rps/base, failures(r.res), r.res.Retried, reloads,
			ms(pct(r.reloads, 50)), ms(pct(r.reloads, 100)), float64(r.steadyKB)/1024, float64(r.peakKB)/1024)
	}
}
