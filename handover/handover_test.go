package handover_test

import (
	"errors"
	"net"
	"os"
	"testing"

	"github.com/handoff-dev/handoff/handover"
	"github.com/handoff-dev/handoff/upgrader"
)

// TestNotUnderHandoff: without HANDOFF_HANDOVER_FDS (not run by
// handoff --handover), New succeeds, Adopted is closed at once, and Offer
// leaves each connection with the caller (ErrNotHandingOver): it drains.
func TestNotUnderHandoff(t *testing.T) {
	os.Unsetenv(upgrader.HandoverChannelsEnv)
	h, err := handover.New(handover.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := <-h.Adopted(); ok {
		t.Error("a connection adopted from nowhere")
	}
	if h.HandedOver() {
		t.Error("handed over with no successor")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := h.Listener(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := h.Offer(sc, nil, nil); !errors.Is(err, handover.ErrNotHandingOver) {
		t.Errorf("Offer: %v, want ErrNotHandingOver", err)
	}
	// Still the caller's: it works.
	if _, err := sc.Write([]byte("x")); err != nil {
		t.Errorf("the connection after a refused Offer: %v", err)
	}
}

// TestMalformed: a variable that names no channels is an error that says
// how to fix it.
func TestMalformed(t *testing.T) {
	t.Setenv(upgrader.HandoverChannelsEnv, "x")
	if _, err := handover.New(handover.Options{}); err == nil {
		t.Error("no error for HANDOFF_HANDOVER_FDS=x")
	}
}
