//go:build linux

package upgrader_test

import (
	"bufio"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSSEReconnect: a server-sent events stream (examples/sse) ends when its
// generation begins to drain, so that the client reconnects to the new
// generation within a second, not at the drain deadline.
func TestSSEReconnect(t *testing.T) {
	spawns(t)
	s := launchBin(t, sseBin, nil, nil, nil)
	first := s.waitPid(0, 10*time.Second)
	resp, err := fresh.Get("http://" + s.addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.After(5 * time.Second); ; {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the stream ended before %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q in the stream", want)
			}
		}
	}
	waitFor("pid=" + strconv.Itoa(first))
	s.signal(syscall.SIGHUP)
	second := s.waitPid(first, 10*time.Second)
	handedOver := time.Now()
	waitFor("event: bye")
	for range lines {
	}
	ended := time.Since(handedOver)
	t.Logf("the stream ended %v after the new generation was ready", ended.Round(time.Millisecond))
	if ended > time.Second {
		t.Errorf("the stream ended %v after the handover; want within a second", ended)
	}
	// The client reconnects: the new generation answers.
	resp2, err := fresh.Get("http://" + s.addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	line := ""
	sc := bufio.NewScanner(resp2.Body)
	for sc.Scan() && !strings.HasPrefix(line, "data: pid=") {
		line = sc.Text()
	}
	if !strings.Contains(line, "pid="+strconv.Itoa(second)) {
		t.Errorf("after reconnecting: %q, want the new generation %d", line, second)
	}
	resp2.Body.Close()
	s.stop()
}
