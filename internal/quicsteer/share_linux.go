//go:build linux

package quicsteer

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Host passes descriptors from a process to the one that replaces it, by
// name: upgrader.Upgrader's InheritedFile and PassFile. Both modes share a
// group's maps this way — module quic's Listen from one generation to the
// next, handoff run from one handoff to the next (SIGUSR2).
type Host interface {
	InheritedFile(name string) (*os.File, error)
	PassFile(name string, f *os.File) error
}

// mapNames are the names of a group's maps after their prefix.
var mapNames = [...]string{"socks", "conf", "counters"}

// fields returns m's maps in the order of mapNames.
func (m *Maps) fields() [len(mapNames)]**ebpf.Map {
	return [...]**ebpf.Map{&m.Socks, &m.Conf, &m.Counters}
}

// InheritMaps returns the maps of one steering group that the previous
// process passed through h, each named prefix followed by "socks", "conf"
// or "counters", or nil if it passed none (a first process, or one of a
// release whose names differ). A previous process that passed some of the
// three but not all is refused: it runs another release.
func InheritMaps(h Host, prefix string) (*Maps, error) {
	m := &Maps{}
	got := 0
	for i, dst := range m.fields() {
		f, err := h.InheritedFile(prefix + mapNames[i])
		if err != nil {
			m.Close()
			return nil, err
		}
		if f == nil {
			continue
		}
		got++
		// NewMapFromFD owns the descriptor it is given: a copy of f's.
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		f.Close()
		if err != nil {
			m.Close()
			return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
		}
		if *dst, err = ebpf.NewMapFromFD(fd); err != nil {
			unix.Close(fd)
			m.Close()
			return nil, fmt.Errorf("the %s map the previous process passed: %w", mapNames[i], err)
		}
	}
	switch got {
	case len(mapNames):
		return m, nil
	case 0:
		return nil, nil
	}
	m.Close()
	return nil, fmt.Errorf("the previous process passed %d of the %d steering maps: it runs another release; start the same one", got, len(mapNames))
}

// PassMaps registers a copy of each of m's maps with h, under the names
// InheritMaps reads, for the process that replaces this one.
func PassMaps(h Host, prefix string, m *Maps) error {
	for i, src := range m.fields() {
		fd, err := unix.FcntlInt(uintptr((*src).FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
		}
		f := os.NewFile(uintptr(fd), prefix+mapNames[i])
		err = h.PassFile(prefix+mapNames[i], f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
