package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestDaemonHandover runs the example under handoff run --handover (handoff
// built from the main module, ../..) with 20 clients that each send a
// message every 20 ms and wait for its echo, through 2 handoff reloads:
// no connection is closed, every message is echoed, and every client is
// answered by all three generations, its connection relayed by handoff.
func TestDaemonHandover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds handoff and runs generations under it: not under -short")
	}
	dir := t.TempDir()
	handoff, bin := filepath.Join(dir, "handoff"), filepath.Join(dir, "ws")
	build := exec.Command("go", "build", "-o", handoff, ".")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building handoff: %v\n%s", err, out)
	}
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctl := filepath.Join(dir, "ctl.sock")
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(handoff, "run", "--handover", "--control", ctl, "--listen", addr, "--drain-timeout", "20s", "--", bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	logText := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dialed *websocket.Conn
	for deadline := time.Now().Add(15 * time.Second); dialed == nil; {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		dialed, _, err = websocket.Dial(dctx, "ws://"+addr+"/echo", nil)
		dcancel()
		if err != nil && time.Now().After(deadline) {
			t.Fatalf("the first generation did not answer in 15 s: %v\n%s", err, logText())
		}
		if err != nil {
			time.Sleep(20 * time.Millisecond) // waiting for handoff to bind, bounded by the deadline
		}
	}
	dialed.CloseNow()

	const n = 20
	type client struct {
		mu         sync.Mutex
		sent, echo int
		by         map[int]int
		err        error
	}
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
				var pid int
				switch _, e := fmt.Sscanf(string(got), "pid=%d", &pid); {
				case err != nil:
					cl.err = fmt.Errorf("message %d: %w", seq, err)
				case e != nil || !strings.HasSuffix(string(got), " "+msg):
					cl.err = fmt.Errorf("echo %q for %q", got, msg)
				default:
					cl.echo++
					cl.by[pid]++
				}
				failed := cl.err != nil
				cl.mu.Unlock()
				if failed {
					return
				}
				time.Sleep(20 * time.Millisecond) // the client's pace, not a synchronisation
			}
		}()
	}
	// waitGenerations waits until every client has been answered by k
	// processes.
	waitGenerations := func(k int) {
		deadline := time.Now().Add(20 * time.Second)
		for _, cl := range cs {
			for {
				cl.mu.Lock()
				ok, err := len(cl.by) >= k, cl.err
				cl.mu.Unlock()
				if err != nil {
					t.Fatalf("a client: %v\n%s", err, logText())
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a client not answered by %d generations in 20 s:\n%s", k, logText())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	waitGenerations(1)
	for i := 1; i <= 2; i++ {
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(rctx, handoff, "reload", "--control", ctl).CombinedOutput()
		rcancel()
		if err != nil {
			t.Fatalf("handoff reload %d: %v\n%s\n%s", i, err, out, logText())
		}
		waitGenerations(i + 1)
	}
	cancel()
	wg.Wait()
	echoed := 0
	for _, cl := range cs {
		if cl.err != nil && !strings.Contains(cl.err.Error(), "context canceled") {
			t.Errorf("a client: %v", cl.err)
		}
		if len(cl.by) != 3 {
			t.Errorf("a client was answered by %d processes, want 3: %v", len(cl.by), cl.by)
		}
		echoed += cl.echo
	}
	if !strings.Contains(logText(), "handover.relayed") {
		t.Errorf("no handover.relayed record in handoff's log:\n%s", logText())
	}
	t.Logf("%d clients under handoff run --handover, 2 reloads: %d messages echoed, 0 connections closed, 0 reconnects", n, echoed)

	// Stopped with no successor, the process closes each connection with
	// 1001 at once: at its drain's deadline (10 s) they would end without.
	stopClosesWith1001(t, addr, func() error { return cmd.Process.Signal(syscall.SIGTERM) }, logText)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("handoff has not exited 30 s after SIGTERM\n%s", logText())
	}
}
