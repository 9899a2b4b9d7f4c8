//go:build linux

package upgrader

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// channelPair returns a SOCK_SEQPACKET socketpair: the descriptor a
// process under handoff --handover inherits, and handoff's end.
func channelPair(t *testing.T) (mine int, handoffs *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "handoff-end")
	t.Cleanup(func() { f.Close() })
	return fds[0], f
}

// TestInheritedHandover: over the channels handoff passes, a Handover says
// hello on IN at once, takes the variable out of the environment, and is
// not handed over until handoff forwards the successor's hello on OUT — it
// then reports true without taking the hello, which the first Offer reads.
// A closed OUT (no successor adopts) leaves it false.
func TestInheritedHandover(t *testing.T) {
	in, hIn := channelPair(t)
	out, hOut := channelPair(t)
	t.Setenv(HandoverChannelsEnv, fmt.Sprintf("%d,%d", in, out))
	h, err := InheritedHandover(HandoverOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv(HandoverChannelsEnv); ok {
		t.Errorf("%s left in the environment", HandoverChannelsEnv)
	}
	_ = hIn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 16)
	if n, err := hIn.Read(b); err != nil || n != 2 || b[0] != 'H' {
		t.Fatalf("hello on IN: %q %v", b[:n], err)
	}
	if h.HandedOver() {
		t.Fatal("handed over before handoff said the successor adopts")
	}
	if _, err := hOut.Write([]byte{'H', handoverVersion}); err != nil {
		t.Fatal(err)
	}
	if !h.HandedOver() || !h.HandedOver() {
		t.Fatal("not handed over once the successor's hello is on OUT")
	}
	// The hello is still there for the sender, which reads it.
	if _, err := h.sender(); err != nil {
		t.Errorf("the sender did not find the hello: %v", err)
	}
	// handoff closing IN ends the adoptions.
	hIn.Close()
	select {
	case _, ok := <-h.Adopted():
		if ok {
			t.Error("a connection adopted from nothing")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Adopted not closed after handoff closed IN")
	}

	// No successor adopts: handoff closes OUT.
	in2, _ := channelPair(t)
	out2, hOut2 := channelPair(t)
	t.Setenv(HandoverChannelsEnv, fmt.Sprintf("%d,%d", in2, out2))
	h2, err := InheritedHandover(HandoverOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hOut2.Close()
	if h2.HandedOver() {
		t.Error("handed over after handoff closed OUT")
	}
}

// TestInheritedHandoverWithout: no variable, a handover that moves nothing;
// a malformed one or a descriptor that is no SOCK_SEQPACKET socket, an
// error that says what to do.
func TestInheritedHandoverWithout(t *testing.T) {
	os.Unsetenv(HandoverChannelsEnv)
	h, err := InheritedHandover(HandoverOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := <-h.Adopted(); ok {
		t.Error("adopted without channels")
	}
	if h.HandedOver() {
		t.Error("handed over without channels")
	}
	for _, v := range []string{"", "3", "a,b", "1,2", "7,7", "3,4,5"} {
		t.Setenv(HandoverChannelsEnv, v)
		if _, err := InheritedHandover(HandoverOptions{}, nil); err == nil || !strings.Contains(err.Error(), "IN,OUT") {
			t.Errorf("%q: %v, want an error naming IN,OUT", v, err)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	t.Setenv(HandoverChannelsEnv, fmt.Sprintf("%d,%d", r.Fd(), w.Fd()))
	if _, err := InheritedHandover(HandoverOptions{}, nil); err == nil || !errors.Is(err, unix.ENOTSOCK) {
		t.Errorf("pipes: %v, want ENOTSOCK", err)
	}
}
