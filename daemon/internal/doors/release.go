//go:build linux

package doors

import (
	"log/slog"
	"os"

	"github.com/handoff-dev/handoff/daemon/internal/procfs"
	"golang.org/x/sys/unix"
)

// Release closes every copy of the listening sockets (by inode) that this
// process still holds once its own listeners are closed, once a stop has sent the stop signal to every generation:
// from then on a socket lives only as long as a generation holds it, so that
// when the last one closes it, it stops listening at once. A copy kept open
// here would let the kernel complete handshakes that nobody accepts, and
// those connections would be reset when handoff exits — after their clients
// had sent their requests.
//
// The caller closes the listeners it opened itself first. The upgrader
// (tableflip) keeps copies of its own, for a new handoff on
// SIGUSR2, and closes them only when it stops. Those descriptors are replaced
// in place by /dev/null (dup3), so that their numbers stay taken until the
// upgrader closes them. Sockets that systemd holds too (a .socket unit, the
// fd store) are systemd's to close.
func Release(inodes []uint64, log *slog.Logger) {
	want := map[uint64]bool{}
	for _, ino := range inodes {
		want[ino] = true
	}
	fds, err := procfs.Descriptors("self")
	if err != nil {
		log.Warn("the sockets stay open until handoff exits: cannot list its descriptors", "event", "stop.release_failed", "err", err)
		return
	}
	null := -1
	for fd, link := range fds {
		if ino, ok := procfs.SocketInode(link); !ok || !want[ino] {
			continue
		}
		if null < 0 {
			if null, err = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
				log.Warn("the sockets stay open until handoff exits", "event", "stop.release_failed", "err", os.NewSyscallError("open /dev/null", err))
				return
			}
			defer unix.Close(null)
		}
		if err := unix.Dup3(null, fd, unix.O_CLOEXEC); err != nil {
			log.Warn("a socket stays open until handoff exits", "event", "stop.release_failed", "fd", fd, "err", os.NewSyscallError("dup3", err))
		}
	}
}
