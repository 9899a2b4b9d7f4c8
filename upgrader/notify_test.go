//go:build linux

package upgrader_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/proc"
)

// notifyMsg is one datagram received on NOTIFY_SOCKET.
type notifyMsg struct {
	pid  int
	text string
	fds  int
}

// notifySocket is a fake service manager's NOTIFY_SOCKET: it records every
// datagram with its sender's pid, and acknowledges BARRIER=1 by closing the
// descriptor that comes with it, as systemd does.
func notifySocket(t *testing.T) (path string, msgs <-chan notifyMsg) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, _ := conn.SyscallConn()
	_ = raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	c := make(chan notifyMsg, 1000)
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, 1024)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				close(c)
				return
			}
			m := notifyMsg{text: string(buf[:n])}
			cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, cm := range cmsgs {
				if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
					m.pid = int(cred.Pid)
				}
				if fds, err := unix.ParseUnixRights(&cm); err == nil {
					m.fds += len(fds)
					for _, fd := range fds {
						unix.Close(fd)
					}
				}
			}
			c <- m
		}
	}()
	return path, c
}

// TestNotifySequence checks what a Type=notify-reload unit's systemd would
// receive over a first start, a reload, a failed reload and a stop, and that
// watchdog pings come from whichever generation is the main process.
func TestNotifySequence(t *testing.T) {
	spawns(t)
	path, msgs := notifySocket(t)
	s := startServer(t, []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=300000"}, "-idle-grace", "200ms")
	gen1 := s.pid()

	var got []notifyMsg
	pings := map[int]int{}
	extends := map[int]int{}
	// next returns the next message other than a watchdog ping or a timeout
	// extension.
	next := func(what string) notifyMsg {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				if m.text == "WATCHDOG=1" {
					pings[m.pid]++
					continue
				}
				if strings.HasPrefix(m.text, "EXTEND_TIMEOUT_USEC=") {
					extends[m.pid]++
					continue
				}
				got = append(got, m)
				return m
			case <-timeout:
				t.Fatalf("no %s message; got so far %+v\nlog:\n%s", what, got, s.log())
			}
		}
	}
	expect := func(m notifyMsg, pid int, lines ...string) {
		t.Helper()
		if m.pid != pid {
			t.Errorf("%q came from pid %d, want %d", m.text, m.pid, pid)
		}
		have := strings.Split(m.text, "\n")
		for _, want := range lines {
			found := false
			for _, h := range have {
				found = found || h == want || (strings.HasSuffix(want, "=") && strings.HasPrefix(h, want))
			}
			if !found {
				t.Errorf("%q lacks %q", m.text, want)
			}
		}
	}
	// wait lets pings arrive and returns how many came from each pid.
	waitPings := func(d time.Duration) map[int]int {
		for end := time.After(d); ; {
			select {
			case m := <-msgs:
				if m.text != "WATCHDOG=1" {
					t.Fatalf("unexpected %q from pid %d", m.text, m.pid)
				}
				pings[m.pid]++
			case <-end:
				out := pings
				pings = map[int]int{}
				return out
			}
		}
	}

	// First start.
	expect(next("READY"), gen1, "READY=1", "STATUS=")
	if p := waitPings(400 * time.Millisecond); p[gen1] == 0 {
		t.Errorf("no watchdog ping from generation 1: %v", p)
	}

	// A reload.
	before := monotonicUsec()
	s.signal(syscall.SIGHUP)
	m := next("RELOADING")
	expect(m, gen1, "RELOADING=1", "MONOTONIC_USEC=")
	if usec := field(m.text, "MONOTONIC_USEC"); usec < before || usec > monotonicUsec() {
		t.Errorf("MONOTONIC_USEC=%d is not CLOCK_MONOTONIC now (%d)", usec, before)
	}
	gen2 := s.waitPid(gen1, 10*time.Second)
	m = next("MAINPID")
	expect(m, gen1, "MAINPID="+strconv.Itoa(gen2), "READY=1")
	// Generation 1 was the main process until MAINPID=, through the new
	// one's bake window: its pings until then are due.
	pings = map[int]int{}
	m = next("BARRIER")
	expect(m, gen1, "BARRIER=1")
	if extends[gen1] == 0 {
		t.Errorf("no EXTEND_TIMEOUT_USEC= from generation 1 during the upgrade: %v", extends)
	}
	if m.fds != 1 {
		t.Errorf("BARRIER=1 came with %d fds, want 1", m.fds)
	}
	p := waitPings(600 * time.Millisecond)
	if p[gen2] == 0 {
		t.Errorf("no watchdog ping from generation 2: %v", p)
	}
	if p[gen1] != 0 {
		t.Errorf("generation 1 pinged the watchdog after handing over: %v", p)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", gen2))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if strings.HasPrefix(kv, "WATCHDOG_") || strings.HasPrefix(kv, "LISTEN_") {
			t.Errorf("generation 2 inherited %s", kv)
		}
	}

	// A failed reload.
	// A release that fails after upgrader.New: its stderr is quoted.
	good := filepath.Join(s.dir, "good")
	proc.CopyExec(t, s.bin, good)
	proc.WriteExec(t, s.bin, []byte("#!/bin/sh\nexec "+good+" \"$@\" -addr tcp://no-port\n"))
	s.signal(syscall.SIGHUP)
	expect(next("RELOADING"), gen2, "RELOADING=1", "MONOTONIC_USEC=")
	m = next("READY after failure")
	expect(m, gen2, "READY=1", "STATUS=")
	if !strings.Contains(m.text, "upgrade failed") || !strings.Contains(m.text, "no-port: malformed address") {
		t.Errorf("failure STATUS does not say why: %q", m.text)
	}

	// A stop.
	s.signal(syscall.SIGTERM)
	expect(next("STOPPING"), gen2, "STOPPING=1")
	s.stop()
	for _, m := range got {
		if m.pid == gen1 && strings.Contains(m.text, "STOPPING") {
			t.Errorf("generation 1 sent STOPPING=1 after handing over")
		}
	}
	if len(got) != 7 {
		t.Errorf("got %d messages, want 7: %+v", len(got), got)
	}
}

func field(text, key string) int64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}

// TestFDStore checks that, when systemd sets $FDSTORE, each generation hands
// its listening sockets (TCP and Unix) to the fd store once ready, and that a
// real stop leaves the Unix socket's file for the socket systemd keeps.
func TestFDStore(t *testing.T) {
	spawns(t)
	path, msgs := notifySocket(t)
	sock := filepath.Join(t.TempDir(), "app.sock")
	s := startServer(t, []string{"NOTIFY_SOCKET=" + path, "FDSTORE=4"}, "-idle-grace", "100ms",
		"-addr", proc.FreeAddr(t)+",unix://"+sock)
	stored := func() notifyMsg {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m.text, "FDSTORE=1") {
					return m
				}
			case <-timeout:
				t.Fatalf("no FDSTORE=1 message:\n%s", s.log())
			}
		}
	}
	m := stored()
	if m.text != "FDSTORE=1\nFDNAME=handoff-fdstore" || m.fds != 2 || m.pid != s.pid() {
		t.Errorf("generation 1 stored %+v", m)
	}
	old := s.signal(syscall.SIGHUP)
	gen2 := s.waitPid(old, 10*time.Second)
	if m := stored(); m.fds != 2 || m.pid != gen2 {
		t.Errorf("generation 2 stored %+v", m)
	}
	s.stop()
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("the stored Unix socket's file is gone after stop: %v", err)
	}
}
