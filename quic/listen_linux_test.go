package quic

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/quicsteer"
)

// fakeHost is a generation without an Upgrader: files pass by hand.
type fakeHost struct {
	t         *testing.T
	gen       int
	inherited map[string]*os.File
	passed    map[string]*os.File
	hooks     []func() error
}

func newFakeHost(t *testing.T, gen int, parent *fakeHost) *fakeHost {
	h := &fakeHost{t: t, gen: gen, inherited: map[string]*os.File{}, passed: map[string]*os.File{}}
	if parent != nil {
		for name, f := range parent.passed {
			h.inherited[name] = dupFile(t, f)
		}
	}
	return h
}

func dupFile(t *testing.T, f *os.File) *os.File {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := os.NewFile(uintptr(fd), f.Name())
	t.Cleanup(func() { d.Close() })
	return d
}

func (h *fakeHost) Generation() int { return h.gen }
func (h *fakeHost) HasParent() bool { return len(h.inherited) > 0 }
func (h *fakeHost) InheritedFile(name string) (*os.File, error) {
	f := h.inherited[name]
	if f == nil {
		return nil, nil
	}
	// Passed on as the upgrader does with a file asked for.
	h.passed[name] = dupFile(h.t, f)
	return f, nil
}
func (h *fakeHost) PassFile(name string, f *os.File) error {
	h.passed[name] = dupFile(h.t, f)
	return nil
}
func (h *fakeHost) OnReady(f func() error) { h.hooks = append(h.hooks, f) }
func (h *fakeHost) ready() {
	for _, f := range h.hooks {
		if err := f(); err != nil {
			h.t.Fatal(err)
		}
	}
}

// needBPF skips the test where this process may not load the steering.
func needBPF(t *testing.T) {
	t.Helper()
	_ = rlimit.RemoveMemlock()
	m, err := quicsteer.NewMaps()
	if err != nil {
		t.Skipf("the steering needs BPF, which this process may not use (run the tests as root): %v", quicsteer.Explain(err))
	}
	m.Close()
}

// TestCIDGenerator checks that every ID the generator writes carries its
// slot under its key.
func TestCIDGenerator(t *testing.T) {
	for slot := uint8(0); slot < MaxGenerations; slot++ {
		g := cidGenerator{slot: slot, key: 0xbeef}
		for range 100 {
			id, err := g.GenerateConnectionID()
			if err != nil {
				t.Fatal(err)
			}
			got, ok := quicsteer.DecodeCookie(id.Bytes(), 0xbeef)
			if !ok || got != slot || id.Len() != CIDLen {
				t.Fatalf("ID %x of slot %d decodes to %d, %v", id.Bytes(), slot, got, ok)
			}
		}
	}
}

func freeUDPAddr(t *testing.T) string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// TestThirtyThreeGenerations: generation n takes slot (n-1) % 32, so the
// 33rd would share the first's slot. Listen refuses it while the first
// still holds its socket, with ErrTooManyGenerations; once the first has
// closed it, the 33rd takes the slot.
func TestThirtyThreeGenerations(t *testing.T) {
	needBPF(t)
	addr := freeUDPAddr(t)
	var parent *fakeHost
	socks := map[int]*Socket{}
	for gen := 1; gen <= MaxGenerations; gen++ {
		h := newFakeHost(t, gen, parent)
		s, err := listen(h, addr)
		if err != nil {
			t.Fatalf("generation %d: %v", gen, err)
		}
		t.Cleanup(func() { s.Close() })
		h.ready()
		if s.Slot() != gen-1 {
			t.Fatalf("generation %d has slot %d, want %d", gen, s.Slot(), gen-1)
		}
		socks[gen], parent = s, h
	}
	h33 := newFakeHost(t, MaxGenerations+1, parent)
	_, err := listen(h33, addr)
	if !errors.Is(err, ErrTooManyGenerations) {
		t.Fatalf("generation 33 while 1 to 32 are alive: %v, want ErrTooManyGenerations", err)
	}
	t.Logf("generation 33 refused: %v", err)
	socks[1].Close()
	h33 = newFakeHost(t, MaxGenerations+1, parent)
	s, err := listen(h33, addr)
	if err != nil {
		t.Fatalf("generation 33 once generation 1 is gone: %v", err)
	}
	defer s.Close()
	h33.ready()
	if s.Slot() != 0 {
		t.Fatalf("generation 33 has slot %d, want 0", s.Slot())
	}
	c, err := s.st.maps.ReadConf()
	if err != nil {
		t.Fatal(err)
	}
	if c.Newest != 0 || c.Previous != MaxGenerations-1 {
		t.Fatalf("configuration %+v after generation 33 is ready, want newest 0, previous 31", c)
	}
}

// TestWithoutPrivileges: a process that may not use BPF gets, from Listen,
// an error that wraps ErrNoBPF and says what to grant. The test runs itself
// as nobody.
func TestWithoutPrivileges(t *testing.T) {
	if os.Getenv("HANDOFF_QUIC_UNPRIVILEGED") != "" {
		_, err := listen(newFakeHost(t, 1, nil), freeUDPAddr(t))
		fmt.Printf("listen: %v; ErrNoBPF %v\n", err, errors.Is(err, ErrNoBPF))
		return
	}
	if testing.Short() {
		t.Skip("spawns a process")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run itself as nobody")
	}
	// The test binary's directory is root's alone: run a copy nobody can.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := dir + "/quic.test"
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestWithoutPrivileges$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HANDOFF_QUIC_UNPRIVILEGED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, want := range []string{"ErrNoBPF true", "CAP_BPF", "root"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the unprivileged Listen's output lacks %q", want)
		}
	}
}

// TestStats: a datagram of this generation's connection, received on its
// socket, is counted in ByCookie, and, with the kernel's BPF statistics
// enabled, in the program's Runs and RunTime.
func TestStats(t *testing.T) {
	needBPF(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Skipf("kernel BPF statistics unavailable: %v", err)
	}
	defer stats.Close()
	addr := freeUDPAddr(t)
	h := newFakeHost(t, 1, nil)
	s, err := listen(h, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.ready()
	before, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.ConnectionIDGenerator().GenerateConnectionID()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 10
	for range n {
		if _, err := cl.Write(shortPacket(0x40, id.Bytes(), 100)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 200)
	for i := range n {
		if err := s.PacketConn().SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.PacketConn().ReadFrom(buf); err != nil {
			t.Fatalf("datagram %d of %d not received: %v", i+1, n, err)
		}
	}
	after, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if d := after.ByCookie - before.ByCookie; d != n {
		t.Errorf("ByCookie grew by %d, want %d", d, n)
	}
	if d := after.Runs - before.Runs; d != n {
		t.Errorf("Runs grew by %d, want %d", d, n)
	}
	if after.RunTime <= before.RunTime {
		t.Errorf("RunTime %v then %v, want it to grow", before.RunTime, after.RunTime)
	}
	t.Logf("%d datagrams: %v of the program's time", n, after.RunTime-before.RunTime)
}

// shortPacket is a QUIC short-header datagram of size bytes to dcid.
func shortPacket(first byte, dcid []byte, size int) []byte {
	p := append([]byte{first}, dcid...)
	return append(p, make([]byte, size-len(p))...)
}
