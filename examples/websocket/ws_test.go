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
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWSKeepsConnections runs the server over ws:// with 50 clients that
// each send a message every 20 ms and wait for its echo, through three
// SIGHUPs: no connection is closed, every message is echoed once, in order,
// and every client is answered by all four generations; each old
// generation exits once its connections have moved.
func TestWSKeepsConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("runs generations of a server: not under -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ws")
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
	logText := func() string { b, _ := os.ReadFile(filepath.Join(dir, "log")); return string(b) }
	readPid := func() int { b, _ := os.ReadFile(pidfile); p, _ := strconv.Atoi(strings.TrimSpace(string(b))); return p }
	waitPid := func(old int) int {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if p := readPid(); p != 0 && p != old {
				return p
			}
		}
		t.Fatalf("pid file still %d:\n%s", old, logText())
		return 0
	}
	pids := []int{waitPid(0)}
	defer func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}()

	const n = 50
	type client struct {
		mu         sync.Mutex
		sent, echo int
		by         map[int]int
		err        error
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := make([]*client, n)
	var wg sync.WaitGroup
	for i := range cs {
		cl := &client{by: map[int]int{}}
		cs[i] = cl
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.CloseNow()
			for seq := 1; ctx.Err() == nil; seq++ {
				msg := fmt.Sprintf("client %d message %d", i, seq)
				wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := c.Write(wctx, websocket.MessageText, []byte(msg))
				var got []byte
				if err == nil {
					_, got, err = c.Read(wctx)
				}
				wcancel()
				cl.mu.Lock()
				cl.sent++
				if err != nil {
					cl.err = fmt.Errorf("message %d: %v", seq, err)
					cl.mu.Unlock()
					return
				}
				var pid int
				var rest string
				if _, e := fmt.Sscanf(string(got), "pid=%d", &pid); e != nil || !strings.HasSuffix(string(got), " "+msg) {
					rest = string(got)
				}
				if rest != "" {
					cl.err = fmt.Errorf("echo %q for %q", rest, msg)
					cl.mu.Unlock()
					return
				}
				cl.echo++
				cl.by[pid]++
				cl.mu.Unlock()
				time.Sleep(20 * time.Millisecond) // the client's pace
			}
		}()
	}
	waitAnswered := func(pid int) {
		deadline := time.Now().Add(15 * time.Second)
		for _, cl := range cs {
			for {
				cl.mu.Lock()
				ok, err := cl.by[pid] > 0, cl.err
				cl.mu.Unlock()
				if err != nil {
					t.Fatalf("a client: %v\n%s", err, logText())
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a client not answered by pid %d in 15 s:\n%s", pid, logText())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	waitAnswered(pids[0])
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
		if gone > 5*time.Second {
			t.Errorf("old generation %d lived %v after SIGHUP; its connections should have moved", old, gone)
		}
		waitAnswered(pids[len(pids)-1])
	}
	cancel()
	wg.Wait()
	sent, echoed := 0, 0
	for _, cl := range cs {
		if cl.err != nil && !strings.Contains(cl.err.Error(), "context canceled") {
			t.Errorf("a client: %v", cl.err)
		}
		for _, p := range pids {
			if cl.by[p] == 0 {
				t.Errorf("a client was never answered by pid %d: %v", p, cl.by)
			}
		}
		sent += cl.sent
		echoed += cl.echo
	}
	t.Logf("%d clients over ws://, 3 upgrades: %d messages echoed, 0 connections closed, 0 reconnects", n, echoed)

	// Stopped with no successor, the generation closes each connection
	// with 1001 at once (OnTurn interrupts every reader): at its drain's
	// deadline (10 s) they would end without.
	stopClosesWith1001(t, addr, func() error { return syscall.Kill(pids[len(pids)-1], syscall.SIGTERM) }, logText)
}

// stopClosesWith1001 connects 5 clients and has each echoed once, calls
// stop, and checks that every one is then closed with 1001 within 3 s (the
// drain's deadline is 10 s).
func stopClosesWith1001(t *testing.T, addr string, stop func() error, logText func() string) {
	t.Helper()
	var cs []*websocket.Conn
	for range 5 {
		c, _, err := websocket.Dial(context.Background(), "ws://"+addr+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(context.Background(), websocket.MessageText, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(context.Background()); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	failed := false
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for i, c := range cs {
		_, _, err := c.Read(ctx)
		if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
			t.Errorf("client %d at the stop: %v (close status %d), want a close with 1001", i, err, st)
			failed = true
		}
	}
	if failed {
		t.Logf("the log:\n%s", logText())
	}
}
