package listener_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/listener"
)

func TestListenPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = listener.Listen(context.Background(), busy.Addr().String())
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("got %v, want EADDRINUSE", err)
	}
	msg := err.Error()
	for _, w := range []string{busy.Addr().String(), "address already in use", "choose another port"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q lacks %q", msg, w)
		}
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	// A socket file whose process is gone: bound, then closed without
	// unlinking, as a crash leaves it.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}

	ln, err := listener.Listen(context.Background(), "unix://"+path+"?mode=0660")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}
	// A live socket is not replaced.
	_, err = listener.Listen(context.Background(), "unix://"+path)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "a running process answers") {
		t.Errorf("second bind: %v", err)
	}
	// Closing does not unlink: the file must survive a handoff.
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file removed on close: %v", err)
	}
}

func TestListenUnixNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := listener.Listen(context.Background(), "unix://"+path)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("got %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Error("a regular file was replaced")
	}
}

func TestListenSystemdNameNotPassed(t *testing.T) {
	_, err := listener.Listen(context.Background(), "systemd:web")
	if err == nil || !strings.Contains(err.Error(), "no sockets were passed") || !strings.Contains(err.Error(), "FileDescriptorName=web") {
		t.Fatalf("got %v", err)
	}
}

func TestListenPacketAndKinds(t *testing.T) {
	var c listener.Config
	a, _ := listener.Parse("udp://127.0.0.1:0")
	pc, src, err := c.ListenPacket(context.Background(), a)
	if err != nil || src != listener.Bound {
		t.Fatalf("ListenPacket: %v %v", src, err)
	}
	pc.Close()
	if _, _, err := c.Listen(context.Background(), a); err == nil || !strings.Contains(err.Error(), "ListenPacket") {
		t.Errorf("Listen on a datagram address: %v", err)
	}
}
