//go:build linux

package quicsteer

import (
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// host passes files by name, as an Upgrader does between two processes:
// what one passed, duplicated, is what the next inherits.
type host struct {
	inherited, passed map[string]*os.File
}

func newHost(t *testing.T, parent *host) *host {
	h := &host{inherited: map[string]*os.File{}, passed: map[string]*os.File{}}
	if parent != nil {
		for name, f := range parent.passed {
			h.inherited[name] = dup(t, f)
		}
	}
	t.Cleanup(func() {
		for _, f := range h.passed {
			f.Close()
		}
	})
	return h
}

// dup returns a copy of f, as the kernel gives the next process.
func dup(t *testing.T, f *os.File) *os.File {
	t.Helper()
	c, err := dupFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dupFile returns a copy of f's descriptor.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func (h *host) InheritedFile(name string) (*os.File, error) {
	f := h.inherited[name]
	delete(h.inherited, name)
	return f, nil
}

func (h *host) PassFile(name string, f *os.File) error {
	c, err := dupFile(f)
	if err != nil {
		return err
	}
	if old := h.passed[name]; old != nil {
		old.Close()
	}
	h.passed[name] = c
	return nil
}

// mapID returns the kernel's id of m, which names the map object, not
// the descriptor.
func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Skip("this kernel does not say a map's id")
	}
	return id
}

// TestShareMaps: the maps one process passes are the maps the next
// inherits (the same kernel objects, by id), and it passes them on in turn;
// a first process inherits none; a process given two of the three is
// refused, saying why.
func TestShareMaps(t *testing.T) {
	m := needBPF(t)
	const prefix = "test-quic.v1:127.0.0.1:1:"
	first := newHost(t, nil)
	if got, err := InheritMaps(first, prefix); got != nil || err != nil {
		t.Fatalf("a first process inherited %v, %v; want none", got, err)
	}
	if err := PassMaps(first, prefix, m); err != nil {
		t.Fatal(err)
	}
	second := newHost(t, first)
	got, err := InheritMaps(second, prefix)
	if err != nil || got == nil {
		t.Fatalf("the second process inherited %v, %v; want the first's maps", got, err)
	}
	defer got.Close()
	for i, pair := range [][2]*ebpf.Map{{m.Socks, got.Socks}, {m.Conf, got.Conf}, {m.Counters, got.Counters}} {
		want, have := mapID(t, pair[0]), mapID(t, pair[1])
		if want != have {
			t.Errorf("the %s map inherited is map %d, want the one passed, %d", mapNames[i], have, want)
		}
	}
	// What the second writes, the first's program reads: one object.
	c, err := got.ReadConf()
	if err != nil {
		t.Fatal(err)
	}
	c.Newest = 7
	if err := got.WriteConf(c); err != nil {
		t.Fatal(err)
	}
	if c0, err := m.ReadConf(); err != nil || c0.Newest != 7 {
		t.Fatalf("the first process's map reads %+v, %v after the second wrote Newest 7", c0, err)
	}
	if err := PassMaps(second, prefix, got); err != nil {
		t.Fatal(err)
	}

	partial := newHost(t, second)
	partial.inherited[prefix+"counters"].Close()
	delete(partial.inherited, prefix+"counters")
	if got, err := InheritMaps(partial, prefix); got != nil || err == nil || !strings.Contains(err.Error(), "passed 2 of the 3 steering maps") {
		t.Fatalf("given 2 of the 3 maps: %v, %v; want refused, saying so", got, err)
	}
	for _, f := range partial.inherited {
		f.Close()
	}
}
