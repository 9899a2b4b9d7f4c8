//go:build linux

package upgrader_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
)

// TestHijackedDrain upgrades a server with hijacked connections open (as
// WebSocket servers have), over plain TCP, TLS (with ALPN for h2 and
// HTTP/1.1), a listener wrapper of the user's own, and TLS over that
// wrapper. Handlers that close their connection on the Drainer's OnDrain let the old
// generation exit at once; ones that do not are cut at the drain deadline
// and counted as such.
func TestHijackedDrain(t *testing.T) {
	spawns(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"tcp", nil},
		{"tls", []string{"-tls"}},
		{"wrapped", []string{"-wrap"}},
		{"tls over wrapped", []string{"-tls", "-wrap"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each case its own server; they wait on drains
			useTLS := len(c.args) > 0 && c.args[0] == "-tls"
			t.Run("polite", func(t *testing.T) {
				t.Parallel()
				s := launchBin(t, hijackBin, nil, nil, nil, append([]string{"-drain-timeout", "20s"}, c.args...)...)
				s.waitPid(0, 10*time.Second)
				if useTLS {
					checkH2(t, s.addr)
				}
				for i := 0; i < 5; i++ {
					defer hijack(t, s.addr, useTLS, true).Close()
				}
				took, line := upgradeAndWaitOld(t, s, 25*time.Second)
				t.Logf("old generation gone %v after SIGHUP: %s", took.Round(time.Millisecond), line)
				if took > 3*time.Second || !line.Match("event=drain.done", "hijacked=5") {
					t.Errorf("old generation exited %v after SIGHUP, logging %q; want within about a second, drained with hijacked=5", took, line)
				}
			})
			t.Run("stubborn", func(t *testing.T) {
				t.Parallel()
				s := launchBin(t, hijackBin, nil, nil, nil, append([]string{"-drain-timeout", "1500ms"}, c.args...)...)
				s.waitPid(0, 10*time.Second)
				for i := 0; i < 2; i++ {
					defer hijack(t, s.addr, useTLS, false).Close()
				}
				defer hijack(t, s.addr, useTLS, true).Close()
				took, line := upgradeAndWaitOld(t, s, 10*time.Second)
				t.Logf("old generation gone %v after SIGHUP: %s", took.Round(time.Millisecond), line)
				if took < 1400*time.Millisecond || !line.Match("event=drain.cut", "cut=2", "hijacked=3") {
					t.Errorf("old generation exited %v after SIGHUP, logging %q; want at the 1.5 s deadline, cut=2 of hijacked=3", took, line)
				}
			})
		})
	}
}

// upgradeAndWaitOld sends SIGHUP to the first generation, waits for it to
// exit, stops the new one, and returns how long the old one took and its
// drain's log record.
func upgradeAndWaitOld(t *testing.T, s *server, timeout time.Duration) (time.Duration, logrec.Record) {
	t.Helper()
	first := s.cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	start := time.Now()
	s.signal(syscall.SIGHUP)
	next := s.waitPid(first, 10*time.Second)
	var took time.Duration
	select {
	case err := <-done:
		took = time.Since(start)
		if err != nil {
			t.Errorf("old generation: %v", err)
		}
	case <-time.After(timeout):
		t.Fatalf("old generation pid %d still running %v after SIGHUP:\n%s", first, timeout, s.log())
	}
	recs := s.records()
	line := logrec.Find(recs, "pid="+strconv.Itoa(first), "event=drain.done")
	if line == nil {
		line = logrec.Find(recs, "pid="+strconv.Itoa(first), "event=drain.cut")
	}
	_ = syscall.Kill(next, syscall.SIGTERM)
	if !waitGone(next, 15*time.Second) {
		t.Errorf("new generation pid %d still running after SIGTERM", next)
	}
	return took, line
}

// hijack opens a connection to /hijack and returns it once it is hijacked.
func hijack(t *testing.T, addr string, useTLS, polite bool) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if useTLS {
		// WebSockets over TLS: ALPN http/1.1 (h2 has no hijacking).
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	q := ""
	if polite {
		q = "?polite=1"
	}
	fmt.Fprintf(c, "GET /hijack%s HTTP/1.1\r\nHost: x\r\n\r\n", q)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "101") {
		t.Fatalf("hijack: %q %v", line, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// checkH2 checks that the TLS server speaks h2 to a client that asks for it.
func checkH2(t *testing.T, addr string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`proto=HTTP/2\.0`).Match(b) {
		t.Errorf("TLS server answered %q, want HTTP/2.0", b)
	}
}
