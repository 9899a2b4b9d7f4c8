package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// TestRPCsThroughUpgrades runs the server under open-loop load — 100 RPCs a
// second over each of two client connections, each multiplexing its RPCs on
// one HTTP/2 connection — through three SIGHUPs: no RPC fails, the new generations answer, and each
// old generation is gone within about a second, its clients having moved on
// at its GOAWAY.
func TestRPCsThroughUpgrades(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "grpcd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pidfile := filepath.Join(dir, "pid")
	cmd := exec.Command(bin, "-addr", addr, "-pidfile", pidfile)
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	readPid := func() int { b, _ := os.ReadFile(pidfile); p, _ := strconv.Atoi(strings.TrimSpace(string(b))); return p }
	waitPid := func(old int) int {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if p := readPid(); p != 0 && p != old {
				return p
			}
		}
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("pid file still %d:\n%s", old, b)
		return 0
	}
	pids := []int{waitPid(0)}
	defer func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}()

	var sent, ok atomic.Int64
	var mu sync.Mutex
	byPid := map[string]int{}
	var failures []string
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	call := func(c healthpb.HealthClient) {
		defer wg.Done()
		sent.Add(1)
		var md metadata.MD
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		_, err := c.Check(rctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures = append(failures, err.Error())
			return
		}
		ok.Add(1)
		if p := md.Get("x-pid"); len(p) == 1 {
			byPid[p[0]]++
		}
	}
	for i := 0; i < 2; i++ {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := healthpb.NewHealthClient(conn)
		// The sender counts in wg too, so that its wg.Add never races
		// wg.Wait with the count at zero.
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					wg.Add(1)
					go call(c)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 3; i++ {
		old := pids[len(pids)-1]
		start := time.Now()
		_ = syscall.Kill(old, syscall.SIGHUP)
		pids = append(pids, waitPid(old))
		for alive(old) && time.Since(start) < 10*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		gone := time.Since(start)
		t.Logf("upgrade %d: pid %d gone %v after SIGHUP", i+1, old, gone.Round(time.Millisecond))
		if gone > 2*time.Second {
			t.Errorf("old generation %d lived %v after SIGHUP; its clients should have left at once", old, gone)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	t.Logf("RPCs sent %d, ok %d, failed %d; answered by %v", sent.Load(), ok.Load(), len(failures), byPid)
	if len(failures) > 0 {
		t.Errorf("%d RPCs failed, first: %s", len(failures), failures[0])
	}
	if n := byPid[strconv.Itoa(pids[len(pids)-1])]; n == 0 {
		t.Errorf("the last generation %d answered no RPC: %v", pids[len(pids)-1], byPid)
	}
	if t.Failed() {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Logf("log:\n%s", b)
	}
	_ = syscall.Kill(pids[len(pids)-1], syscall.SIGTERM)
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}
