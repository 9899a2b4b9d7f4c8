//go:build unix

package systemd_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/systemd"
)

func fakeManager(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// recv reads one datagram and the descriptors that came with it.
func recv(t *testing.T, conn *net.UnixConn) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, 256)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, cm := range cmsgs {
		if r, err := unix.ParseUnixRights(&cm); err == nil {
			fds = append(fds, r...)
		}
	}
	return string(buf[:n]), fds
}

func TestWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for _, f := range []func() (bool, error){
		func() (bool, error) { return systemd.Ready("x") },
		func() (bool, error) { return systemd.Barrier(time.Second) },
		func() (bool, error) { return systemd.StoreFiles("web", os.Stdin) },
	} {
		if ok, err := f(); ok || err != nil {
			t.Errorf("got (%v, %v), want (false, nil)", ok, err)
		}
	}
}

func TestMessages(t *testing.T) {
	conn := fakeManager(t)
	if ok, err := systemd.ReadyMainPID(1234, "generation 2\nready"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if got, _ := recv(t, conn); got != "MAINPID=1234\nREADY=1\nSTATUS=generation 2 ready" {
		t.Errorf("got %q", got)
	}
	if _, err := systemd.Reloading(""); err != nil {
		t.Fatal(err)
	}
	got, _ := recv(t, conn)
	if !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("got %q", got)
	}
}

func TestBarrier(t *testing.T) {
	conn := fakeManager(t)
	done := make(chan error, 1)
	go func() { _, err := systemd.Barrier(5 * time.Second); done <- err }()
	msg, fds := recv(t, conn)
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("got %q with %d fds", msg, len(fds))
	}
	select {
	case err := <-done:
		t.Fatalf("Barrier returned (%v) before the manager closed the fd", err)
	case <-time.After(100 * time.Millisecond):
	}
	unix.Close(fds[0])
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Unacknowledged: a timeout.
	go func() { _, err := systemd.Barrier(200 * time.Millisecond); done <- err }()
	_, fds = recv(t, conn)
	defer unix.Close(fds[0])
	if err := <-done; !errors.Is(err, systemd.ErrBarrierTimeout) {
		t.Fatalf("got %v, want ErrBarrierTimeout", err)
	}
}

func TestStoreFiles(t *testing.T) {
	conn := fakeManager(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ok, err := systemd.StoreFiles("web", ln.(*net.TCPListener)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	msg, fds := recv(t, conn)
	if msg != "FDSTORE=1\nFDNAME=web" || len(fds) != 1 {
		t.Fatalf("got %q with %d fds", msg, len(fds))
	}
	// The stored descriptor is the same socket.
	sa, err := unix.Getsockname(fds[0])
	unix.Close(fds[0])
	if err != nil || sa.(*unix.SockaddrInet4).Port != ln.Addr().(*net.TCPAddr).Port {
		t.Errorf("stored fd is bound to %v (%v), want %v", sa, err, ln.Addr())
	}
	if _, err := systemd.StoreFiles("a:b", ln.(*net.TCPListener)); err == nil {
		t.Error("a name with ':' was accepted")
	}
}
