//go:build linux

package daemon_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/daemon/internal/control"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestNotifyUnderSystemd checks what a Type=notify-reload unit's systemd
// receives from handoff: READY=1 once the first generation is ready,
// RELOADING=1 with MONOTONIC_USEC and then READY=1 for each reload, a
// failure STATUS= when the reload fails, and STOPPING=1.
func TestNotifyUnderSystemd(t *testing.T) {
	spawns(t)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	msgs := make(chan string, 100)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				close(msgs)
				return
			}
			cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, cm := range cms {
				if fds, err := unix.ParseUnixRights(&cm); err == nil {
					for _, fd := range fds {
						unix.Close(fd)
					}
				}
			}
			msgs <- string(buf[:n])
		}
	}()
	extends := 0
	next := func(want ...string) string {
		t.Helper()
		var m string
		for {
			select {
			case m = <-msgs:
			case <-time.After(10 * time.Second):
				t.Fatalf("no message with %q", want)
			}
			// Timeout extensions come every second while a reload lasts.
			if !strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC=") {
				break
			}
			extends++
		}
		{
			for _, w := range want {
				if !strings.Contains(m, w) {
					t.Errorf("message %q lacks %q", m, w)
				}
			}
			return m
		}
	}
	d := startDaemon(t, nil)
	next("READY=1")
	next("STATUS=serving generation 1")
	if out, code := d.reload(); code != 0 {
		t.Fatal(out)
	}
	next("RELOADING=1", "MONOTONIC_USEC=")
	next("READY=1", "STATUS=serving generation 2")
	if extends == 0 {
		t.Error("no EXTEND_TIMEOUT_USEC= during the reload")
	}
	proc.WriteExec(t, d.prog, []byte("#!/bin/sh\necho 'bad config' >&2\nexit 1\n"))
	if _, code := d.reload(); code != 1 {
		t.Fatal("broken reload succeeded")
	}
	next("RELOADING=1")
	next("READY=1", "STATUS=reload failed", "bad config", "serving generation 2")
	d.stop()
	next("STOPPING=1")
	// Nothing of handoff's reached the generations' environment.
	for _, m := range appLine.FindAllStringSubmatch(d.log(), -1) {
		if m[1] != m[2] {
			t.Errorf("generation %s saw LISTEN_PID=%s", m[1], m[2])
		}
	}
}

// TestRunAsUser binds a port below 1024 as root and runs the program as
// nobody, which reaches its notify socket and serves the socket.
func TestRunAsUser(t *testing.T) {
	spawns(t)
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	port := lowFreePort(t)
	// The program must be reachable by nobody; t.TempDir's parent is not.
	dir, err := os.MkdirTemp("", "handoff-user-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "app")
	b, _ := os.ReadFile(appBin)
	proc.WriteExec(t, app, b)
	ctl := filepath.Join(dir, "control.sock")
	cmd := exec.Command(handoffBin, "run", "--control", ctl, "--user", "nobody", "--listen", "web=127.0.0.1:"+strconv.Itoa(port), "--", app)
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	var uid string
	deadline := time.Now().Add(10 * time.Second)
	for uid == "" && time.Now().Before(deadline) {
		resp, err := (&net.Dialer{}).Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			resp.Close()
			for _, pid := range proc.Descendants(cmd.Process.Pid) {
				if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(c), "handoff-keeper") {
					continue // handoff's output keeper, root like handoff
				}
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "Uid:") {
						uid = strings.Fields(l)[1]
					}
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ = os.ReadFile(logf.Name())
	if uid != "65534" {
		t.Fatalf("program uid %q, want 65534 (nobody):\n%s", uid, b)
	}
	// The socket answers before the program is ready (handoff holds it):
	// its READY=1, through the notify socket in handoff's run directory,
	// comes when it comes.
	for !strings.Contains(string(b), `msg="generation ready"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		b, _ = os.ReadFile(logf.Name())
	}
	if !strings.Contains(string(b), `msg="generation ready"`) {
		t.Errorf("the program as nobody never said READY=1:\n%s", b)
	}
	// The control socket is root's alone.
	fi, err := os.Stat(ctl)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	hb, _ := os.ReadFile(handoffBin)
	proc.WriteExec(t, filepath.Join(dir, "handoff"), hb)
	status := exec.Command(filepath.Join(dir, "handoff"), "status", "--control", ctl)
	status.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := status.CombinedOutput(); err == nil || !strings.Contains(string(out), "permission denied") {
		t.Errorf("nobody could use the control socket: %v %s", err, out)
	}
}

func lowFreePort(t *testing.T) int {
	for p := 900; p < 1000; p++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Skip("no free port below 1024")
	return 0
}

// TestSocketsFromSystemd starts handoff the way a .socket unit with two
// sockets would: without --listen it passes both on with their names, even
// when the unit named them alike; --listen systemd:NAME picks one. After
// SIGUSR2 the new handoff passes the same sockets, by the same names.
func TestSocketsFromSystemd(t *testing.T) {
	spawns(t)
	for _, c := range []struct {
		flags     []string
		names     string // LISTEN_FDNAMES, for the two sockets
		wantNames string
		usr2      bool
	}{
		{nil, "web:admin", "web:admin", true},
		{nil, "web:web", "web:web", true},
		{[]string{"--listen", "systemd:admin"}, "web:admin", "admin", false},
	} {
		web, admin := proc.FreeAddr(t), proc.FreeAddr(t)
		var files []*os.File
		for _, a := range []string{web, admin} {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				t.Fatal(err)
			}
			f, _ := ln.(*net.TCPListener).File()
			ln.Close()
			files = append(files, f)
		}
		dir := t.TempDir()
		ctlPath := filepath.Join(dir, "c.sock")
		args := append([]string{"-c", `LISTEN_PID=$$ exec "$@"`, "sh", handoffBin, "run", "--control", ctlPath}, c.flags...)
		args = append(args, "--", appBin)
		cmd := exec.Command("/bin/sh", args...)
		cmd.ExtraFiles = files
		cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES="+c.names)
		logPath := filepath.Join(dir, "log")
		logf, _ := os.Create(logPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			f.Close()
		}
		served := []string{admin}
		if c.flags == nil {
			served = append(served, web)
		}
		// waitApp waits for the program's n-th start and checks what it saw.
		waitApp := func(n int) int {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				b, _ := os.ReadFile(logPath)
				if m := appLine.FindAllStringSubmatch(string(b), -1); len(m) >= n {
					if m[n-1][1] != m[n-1][2] || m[n-1][3] != c.wantNames {
						t.Errorf("flags %q, names %s: program saw %s, want LISTEN_FDNAMES=%s", c.flags, c.names, m[n-1][0], c.wantNames)
					}
					pid, _ := strconv.Atoi(m[n-1][1])
					return pid
				}
				time.Sleep(20 * time.Millisecond)
			}
			b, _ := os.ReadFile(logPath)
			t.Fatalf("flags %q, names %s: the program's start %d never came:\n%s", c.flags, c.names, n, b)
			return 0
		}
		// answers checks that each served address is answered by pid.
		answers := func(pid int) {
			t.Helper()
			for _, a := range served {
				got := ""
				deadline := time.Now().Add(5 * time.Second)
				for got != "pid="+strconv.Itoa(pid) && time.Now().Before(deadline) {
					got = postOnce(a)
					time.Sleep(20 * time.Millisecond)
				}
				if got != "pid="+strconv.Itoa(pid) {
					t.Errorf("flags %q, names %s: %s answered %q, want pid=%d", c.flags, c.names, a, got, pid)
				}
			}
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		answers(waitApp(1))
		handoffPid := cmd.Process.Pid
		if c.usr2 {
			_ = cmd.Process.Signal(syscall.SIGUSR2)
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("old handoff: %v", err)
				}
			case <-time.After(20 * time.Second):
				for _, p := range proc.Descendants(cmd.Process.Pid) {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
				_ = cmd.Process.Kill()
				t.Fatalf("flags %q, names %s: the old handoff did not hand over and exit after SIGUSR2:\n%s", c.flags, c.names, readLog(logPath))
			}
			answers(waitApp(2))
			out, err := exec.Command(handoffBin, "status", "--json", "--control", ctlPath).Output()
			var st control.Status
			if err == nil {
				err = json.Unmarshal(out, &st)
			}
			if err != nil || st.PID == handoffPid {
				t.Fatalf("flags %q, names %s: after SIGUSR2: %v %s\n%s", c.flags, c.names, err, out, readLog(logPath))
			}
			handoffPid = st.PID
			_ = syscall.Kill(handoffPid, syscall.SIGTERM)
			deadline := time.Now().Add(20 * time.Second)
			for proc.Alive(handoffPid) && time.Now().Before(deadline) {
				proc.ReapAll()
				time.Sleep(20 * time.Millisecond)
			}
			if proc.Alive(handoffPid) {
				t.Errorf("the new handoff %d did not stop", handoffPid)
			}
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			t.Errorf("handoff: %v", err)
		}
	}
}

// postOnce posts on a fresh connection to addr and returns the trimmed
// answer, or the error.
func postOnce(addr string) string {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
