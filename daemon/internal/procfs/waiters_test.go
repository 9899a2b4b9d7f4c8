//go:build linux

package procfs

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkWaiters measures one look for --ready accept, at a process and
// at its whole tree: a sleeping child that holds a socket it does not wait
// on.
func BenchmarkWaiters(b *testing.B) {
	b.Run("process", func(b *testing.B) { benchmarkWaiters(b, false) })
	b.Run("tree", func(b *testing.B) { benchmarkWaiters(b, true) })
}

func benchmarkWaiters(b *testing.B, tree bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.(*net.TCPListener).File()
	defer f.Close()
	var st unix.Stat_t
	_ = unix.Fstat(int(f.Fd()), &st)
	cmd := exec.Command("sleep", "30")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	want := map[uint64]bool{st.Ino: true}
	b.ResetTimer()
	for range b.N {
		found, _, err := Waiters(cmd.Process.Pid, want, tree)
		if err != nil || found[st.Ino] {
			b.Fatalf("found %v, err %v", found, err)
		}
	}
}
