package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
)

// measureFloor times, n times, how long a new process takes from fork+exec
// to answering its first request on a listening socket it inherits.
func measureFloor(e *env, n int) []time.Duration {
	var out []time.Duration
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		f, _ := ln.(*net.TCPListener).File()
		cmd := exec.Command(e.bins["plain"], "-fd", "3")
		cmd.ExtraFiles = []*os.File{f}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			ln.Close()
			f.Close()
			continue
		}
		// The kernel queues the connection until the new process accepts.
		resp, err := client.Post("http://"+ln.Addr().String()+"/", "text/plain", nil)
		if err == nil {
			resp.Body.Close()
			out = append(out, time.Since(start))
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		ln.Close()
		f.Close()
	}
	return out
}

// printSteady compares requests per second through a socket the server
// inherited with a socket it bound itself, with wrk if installed.
func printSteady(w io.Writer, e *env, d time.Duration) {
	tool := "loadcheck (closed loop, 32 keep-alive connections)"
	if _, err := exec.LookPath("wrk"); err == nil {
		tool = "wrk -t2 -c32"
	}
	measure := func(inherit bool) float64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0
		}
		addr := ln.Addr().String()
		var cmd *exec.Cmd
		if inherit {
			f, _ := ln.(*net.TCPListener).File()
			defer f.Close()
			cmd = exec.Command(e.bins["plain"], "-fd", "3")
			cmd.ExtraFiles = []*os.File{f}
		} else {
			ln.Close()
			cmd = exec.Command(e.bins["plain"], "-addr", addr, "-pidfile", filepath.Join(e.dir, "steady.pid"))
		}
		defer ln.Close()
		if err := cmd.Start(); err != nil {
			return 0
		}
		defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
		for i := 0; i < 500; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if tool != "wrk -t2 -c32" {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			rps, _ := loadcheck.Saturate(ctx, "http://"+addr+"/", 32)
			return rps
		}
		out, err := exec.Command("wrk", "-t2", "-c32", "-d"+strconv.Itoa(int(d.Seconds()))+"s", "http://"+addr+"/").Output()
		if err != nil {
			return 0
		}
		m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			return 0
		}
		rps, _ := strconv.ParseFloat(string(m[1]), 64)
		return rps
	}
	// Alternate, twice each, and keep the best of each, so that warm-up and
	// noise do not decide the ratio.
	var bound, inherited float64
	for i := 0; i < 2; i++ {
		bound = max(bound, measure(false))
		inherited = max(inherited, measure(true))
	}
	ratio := 0.0
	if bound > 0 {
		ratio = inherited / bound
	}
	fmt.Fprintf(w, "steady state — requests/s through an inherited socket ÷ through its own net.Listen: %.0f / %.0f = %.2f (%s, %v each)\n",
		inherited, bound, ratio, tool, d)
}

// printScale runs the scale cases.
func printScale(w io.Writer, e *env) {
	idle10k(w, e, 10000)
	manyListeners(w, e)
}

// idle10k holds n idle keep-alive connections to the library-mode server
// across an upgrade, and checks that the old generation closes every one of
// them cleanly (EOF, not a reset) while fresh requests keep succeeding.
func idle10k(w io.Writer, e *env, n int) {
	s := newServer(e, "library").(*signalled)
	if err := s.start(); err != nil {
		fmt.Fprintf(w, "10,000 idle connections: could not start: %v\n", err)
		return
	}
	defer s.stop()
	conns := make([]net.Conn, 0, n)
	readers := make([]*bufio.Reader, 0, n)
	opened := time.Now()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", s.addr())
		if err != nil {
			fmt.Fprintf(w, "%d idle connections: opened only %d: %v\n", n, i, err)
			break
		}
		conns = append(conns, c)
		readers = append(readers, bufio.NewReader(c))
	}
	// One request on each, so that each is an idle keep-alive connection.
	var wg sync.WaitGroup
	var mu sync.Mutex
	firstErrs := 0
	sem := make(chan struct{}, 256)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			fmt.Fprintf(conns[i], "POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n")
			resp, err := http.ReadResponse(readers[i], nil)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != 200 {
				mu.Lock()
				firstErrs++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	setup := time.Since(opened)

	ctx, cancel := context.WithCancel(context.Background())
	resC := make(chan *loadcheck.Result, 1)
	go func() { resC <- loadcheck.Run(ctx, loadcheck.Config{URL: "http://" + s.addr(), Rate: 200}) }()
	time.Sleep(200 * time.Millisecond)
	ready, old, from, err := s.upgrade()
	if err != nil {
		cancel()
		fmt.Fprintf(w, "%d idle connections: upgrade failed: %v\n", n, err)
		return
	}
	for alive(old) {
		time.Sleep(5 * time.Millisecond)
	}
	drain := time.Since(from)
	time.Sleep(200 * time.Millisecond)
	cancel()
	res := <-resC

	// Every idle connection must have been closed by the old generation
	// with a clean EOF.
	eof, other := 0, 0
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := readers[i].ReadByte(); err == io.EOF {
			eof++
		} else {
			other++
		}
		c.Close()
	}
	fmt.Fprintf(w, "%d idle keep-alive connections across an upgrade (opened in %v, %d failed first requests): SIGHUP→ready %s, old generation drained and exited in %s; closed cleanly (EOF) %d, otherwise %d; load meanwhile: %d requests, %d failed, %d retried\n",
		len(conns), setup.Round(time.Millisecond), firstErrs, ms(ready), ms(drain), eof, other, res.Sent, res.Failures(), res.Retried)
}

// manyListeners times SIGHUP→ready with 1,000 listeners against 1, and the
// same for the floor: fork+exec of a plain Go server that serves as many
// inherited listeners and then writes its pid file. Both write the pid file
// once every listener is served, on tmpfs where there is one.
func manyListeners(w io.Writer, e *env) {
	const rounds = 5
	pidDir := func(b *base) string {
		if e.pidDir != "" {
			return e.pidDir
		}
		return b.dir
	}
	library := func(n int) (time.Duration, error) {
		b := &base{e: e, dir: mustTemp(e.dir, fmt.Sprintf("many%d", n))}
		b.pidfile = filepath.Join(pidDir(b), fmt.Sprintf("many%d.pid", n))
		if _, err := b.launch(e.bins["many"], "-n", strconv.Itoa(n), "-dir", b.dir, "-pidfile", b.pidfile); err != nil {
			return 0, err
		}
		defer b.stop()
		if _, err := b.waitPid(0, 30*time.Second); err != nil {
			return 0, err
		}
		var times []time.Duration
		for i := 0; i < rounds; i++ {
			old := b.pid()
			start := time.Now()
			_ = syscall.Kill(old, syscall.SIGHUP)
			if _, err := b.waitPid(old, time.Minute); err != nil {
				return 0, err
			}
			times = append(times, time.Since(start))
			for alive(old) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		return pct(times, 50), nil
	}
	floor := func(n int) (time.Duration, error) {
		b := &base{e: e, dir: mustTemp(e.dir, fmt.Sprintf("floor%d", n))}
		b.pidfile = filepath.Join(pidDir(b), fmt.Sprintf("floor%d.pid", n))
		var files []*os.File
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		for i := 0; i < n; i++ {
			ln, err := net.Listen("unix", filepath.Join(b.dir, fmt.Sprintf("s%d.sock", i)))
			if err != nil {
				return 0, err
			}
			f, err := ln.(*net.UnixListener).File()
			ln.Close()
			if err != nil {
				return 0, err
			}
			files = append(files, f)
		}
		var times []time.Duration
		for i := 0; i < rounds; i++ {
			_ = os.Remove(b.pidfile)
			cmd := exec.Command(e.bins["plain"], "-fds", strconv.Itoa(n), "-pidfile", b.pidfile)
			cmd.ExtraFiles = files
			start := time.Now()
			if err := cmd.Start(); err != nil {
				return 0, err
			}
			_, err := b.waitPid(0, time.Minute)
			d := time.Since(start)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			if err != nil {
				return 0, err
			}
			times = append(times, d)
		}
		return pct(times, 50), nil
	}
	var t [4]time.Duration
	for i, f := range []func() (time.Duration, error){
		func() (time.Duration, error) { return library(1) },
		func() (time.Duration, error) { return library(1000) },
		func() (time.Duration, error) { return floor(1) },
		func() (time.Duration, error) { return floor(1000) },
	} {
		var err error
		if t[i], err = f(); err != nil {
			fmt.Fprintf(w, "1,000 listeners: %v\n", err)
			return
		}
	}
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	fmt.Fprintf(w, "handover of 1,000 listeners (Unix sockets), SIGHUP→ready p50 of %d: %s against %s for 1 listener (%.1f×)\n", rounds, ms(t[1]), ms(t[0]), ratio(t[1], t[0]))
	fmt.Fprintf(w, "  floor, fork+exec of a plain Go server serving the inherited fds: %s for 1,000 against %s for 1 (%.1f×); the library is %.2f× the floor with 1 and %.2f× with 1,000\n",
		ms(t[3]), ms(t[2]), ratio(t[3], t[2]), ratio(t[0], t[2]), ratio(t[1], t[3]))
}
