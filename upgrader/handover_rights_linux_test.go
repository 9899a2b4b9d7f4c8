package upgrader

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRights: the descriptors of a real SCM_RIGHTS message come back in
// order, close-on-exec (ReadMsgUnix receives with MSG_CMSG_CLOEXEC); a
// malformed header after a good message gives the good message's
// descriptors and an error, so that the receiver can close them.
func TestRights(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := unix.Sendmsg(fds[0], []byte("x"), unix.UnixRights(int(r.Fd()), int(w.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	oob := make([]byte, unix.CmsgSpace(8*4))
	_, oobn, _, _, err := unix.Recvmsg(fds[1], make([]byte, 8), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rights(oob[:oobn])
	if err != nil || len(got) != 2 {
		t.Fatalf("rights = %v, %v; want 2 descriptors", got, err)
	}
	defer closeFds(got)
	for _, fd := range got {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("descriptor %d: flags %#x, %v; want close-on-exec", fd, flags, err)
		}
	}
	var st1, st2 unix.Stat_t
	if unix.Fstat(got[0], &st1) != nil || unix.Fstat(int(r.Fd()), &st2) != nil || st1.Ino != st2.Ino {
		t.Errorf("the first descriptor is not the pipe's read end")
	}

	bad := append(append([]byte(nil), oob[:oobn]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0)
	got2, err := rights(bad)
	if err == nil || len(got2) != 2 {
		t.Errorf("rights of a malformed second header = %v, %v; want the first message's 2 descriptors and an error", got2, err)
	}
	if got, err := rights(nil); got != nil || err != nil {
		t.Errorf("rights(nil) = %v, %v", got, err)
	}
}
