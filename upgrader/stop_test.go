//go:build linux

package upgrader_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// TestUnixSocketSurvivesHandoff serves on a Unix socket: the file stays
// through upgrades, keeps its mode, and is removed on a real stop.
func TestUnixSocketSurvivesHandoff(t *testing.T) {
	spawns(t)
	path := filepath.Join(t.TempDir(), "app.sock")
	s := startServer(t, nil, "-addr", "unix://"+path+"?mode=0640", "-idle-grace", "100ms")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	get := func() string {
		t.Helper()
		resp, err := client.Post("http://app/", "text/plain", nil)
		if err != nil {
			t.Fatalf("request over %s: %v", path, err)
		}
		defer resp.Body.Close()
		b := make([]byte, 64)
		n, _ := resp.Body.Read(b)
		return strings.TrimSpace(string(b[:n]))
	}
	pid := s.pid()
	for i := 0; i < 2; i++ {
		old := s.signal(syscall.SIGHUP)
		pid = s.waitPid(pid, 10*time.Second)
		// The old generation may accept for a moment after the pid file
		// changed, until it hears that the new one is ready.
		deadline := time.Now().Add(2 * time.Second)
		for get() != "pid="+itoa(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("after upgrade %d: pid %d does not answer", i+1, pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
			t.Fatalf("socket file after upgrade %d: %v %v", i+1, fi, err)
		}
		// The old generation drains and exits (the first one is left for
		// s.stop to reap).
		for deadline := time.Now().Add(10 * time.Second); proc.Alive(old); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after upgrade %d: the old generation %d still runs", i+1, old)
			}
		}
	}
	s.stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after a real stop: %v", err)
	}
}

// TestSecondStopSignalCutsDrain stops a server with a long request in
// flight: the first SIGTERM drains, the second ends it at once.
func TestSecondStopSignalCutsDrain(t *testing.T) {
	spawns(t)
	s := startServer(t, nil)
	done, written := make(chan error, 1), make(chan struct{})
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/slow?d=20s", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { close(written) },
		}))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitAccepted(t, s.addr, written)
	pid := s.signal(syscall.SIGTERM)
	// The slow request's connection, and perhaps waitAccepted's, which the
	// server may still be closing.
	if r := s.waitRecord(5*time.Second, "event=drain.started"); r.Get("conns") != "1" && r.Get("conns") != "2" {
		t.Fatalf("drain began with %s connections, want the slow request's (and perhaps one closing): %s", r.Get("conns"), r)
	}
	select {
	case err := <-done:
		t.Fatalf("the slow request ended during a graceful drain: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the second SIGTERM did not end the drain")
	}
	s.waitRecord(5*time.Second, "event=drain.cut", "cut=1")
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("exit after a cut drain: %v", err)
	}
	t.Logf("second SIGTERM to exit: %v", time.Since(start))
}
