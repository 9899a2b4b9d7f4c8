package upgrader

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// turnsFixture is a Handover whose generation has not stopped yet, with n
// tracked connections (real TCP, over loopback) registered with OnTurn in
// order; turned receives each one's index when its f is called.
type turnsFixture struct {
	u      *Upgrader
	h      *Handover
	conns  []net.Conn
	peers  []net.Conn // the accepted end of each
	stops  []func() bool
	turned chan int
}

func newTurnsFixture(t *testing.T, n, turns int) *turnsFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &Upgrader{exitC: make(chan struct{})}
	h := &Handover{u: u, opts: HandoverOptions{Turns: turns, Timeout: time.Minute}}
	f := &turnsFixture{u: u, h: h, turned: make(chan int, n)}
	for i := range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		p, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		f.peers = append(f.peers, p)
		tc := h.Track(c)
		t.Cleanup(func() { tc.Close() })
		f.conns = append(f.conns, tc)
		f.stops = append(f.stops, h.OnTurn(tc, func() { f.turned <- i }))
	}
	return f
}

// next returns the next index turned, failing if none comes while
// something else can still happen.
func (f *turnsFixture) next(t *testing.T) int {
	t.Helper()
	select {
	case i := <-f.turned:
		return i
	case <-time.After(10 * time.Second):
		t.Fatal("no turn came")
		return -1
	}
}

// none checks that no more turns are active than allowed, and that every
// turn granted so far was taken from turned.
func (f *turnsFixture) none(t *testing.T) {
	t.Helper()
	f.h.tmu.Lock()
	active, waiting := f.h.tactive, f.h.waiting.Len()
	f.h.tmu.Unlock()
	if active > f.h.opts.Turns {
		t.Fatalf("%d turns active, more than %d", active, f.h.opts.Turns)
	}
	select {
	case i := <-f.turned:
		t.Fatalf("connection %d got a turn (%d active, %d waiting)", i, active, waiting)
	default:
	}
}

// TestTurnsPaced: once the generation hands over, connections get their
// turns in the order they registered, no more than Turns at once; a turn
// ends when its connection is closed or offered (here: an Offer that
// fails, since no successor channel exists, or the stop OnTurn returned),
// and the next begins; a cancelled registration gets no turn.
func TestTurnsPaced(t *testing.T) {
	const n, turns = 10, 3
	f := newTurnsFixture(t, n, turns)
	if !f.stops[4]() { // connection 4 ends before the handover
		t.Fatal("stop of a waiting turn did not cancel it")
	}
	f.none(t)
	f.u.handedOver.Store(true)
	close(f.u.exitC)
	var got []int
	for range turns {
		got = append(got, f.next(t))
	}
	slices.Sort(got) // granted together, their f run in any order
	f.h.tmu.Lock()
	active := f.h.tactive
	f.h.tmu.Unlock()
	if active != turns {
		t.Fatalf("%d turns active, want %d", active, turns)
	}
	f.none(t)
	// End the turns one way or another: a close, an Offer that fails.
	f.conns[got[0]].Close()
	got = append(got, f.next(t))
	if err := f.h.Offer(f.conns[got[1]], nil, nil); err == nil {
		t.Fatal("Offer without a successor's channel succeeded")
	}
	got = append(got, f.next(t))
	f.none(t)
	for len(got) < n-1 {
		// A close, or the stop OnTurn returned, ends an active turn.
		if i := got[len(got)-turns]; len(got)%2 == 0 {
			f.conns[i].Close()
		} else if f.stops[i]() {
			t.Fatalf("stop of connection %d's active turn reported it cancelled", i)
		}
		got = append(got, f.next(t))
	}
	want := []int{0, 1, 2, 3, 5, 6, 7, 8, 9}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("turns in the order %v, want %v", got, want)
		}
	}
	if f.stops[9]() {
		t.Error("stop of a turn that came reported it cancelled")
	}
}

// TestTurnReadFirst: the turns go to the connections by their last read
// that emptied the socket, the latest first — those read before the
// handover began, then, while turns are given, one that reads so goes to
// the front; a read that fills the buffer, a read on an active turn and one
// on a cancelled turn move nothing; those that never read come last, in the
// order they registered.
func TestTurnReadFirst(t *testing.T) {
	const n, turns = 7, 1
	f := newTurnsFixture(t, n, turns)
	read := func(i, size int) {
		t.Helper()
		if _, err := f.peers[i].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		if _, err := f.conns[i].Read(b); err != nil {
			t.Fatal(err)
		}
	}
	read(1, 16) // before the handover
	read(3, 16)
	if !f.stops[6]() {
		t.Fatal("stop of a waiting turn did not cancel it")
	}
	f.u.handedOver.Store(true)
	close(f.u.exitC)
	if i := f.next(t); i != 3 {
		t.Fatalf("first turn to %d, want 3, the latest reader", i)
	}
	read(0, 1)  // a full buffer: it may be in the middle of a message
	read(3, 16) // active
	read(6, 16) // cancelled
	read(4, 16)
	read(5, 16)
	f.none(t)
	var got []int
	for i := 3; len(got) < n-2; {
		f.conns[i].Close()
		i = f.next(t)
		got = append(got, i)
	}
	if want := []int{5, 4, 1, 0, 2}; !slices.Equal(got, want) {
		t.Fatalf("turns after the first in the order %v, want %v", got, want)
	}
	f.conns[2].Close()
	f.none(t)
}

// TestTurnsAllAtOnce: a generation that stops without handing over calls
// every f at once, and one registered afterwards at once too.
func TestTurnsAllAtOnce(t *testing.T) {
	const n = 20
	f := newTurnsFixture(t, n, 2)
	close(f.u.exitC)
	seen := map[int]bool{}
	for range n {
		seen[f.next(t)] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct connections turned, want %d", len(seen), n)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	f.h.OnTurn(f.conns[0], wg.Done)
	wg.Wait()
}

// TestTurnsHurried: HurryAfter (here half the drain timeout, library
// mode's default) after the handover began, every connection still waiting
// gets its turn at once; before, only Turns of them had one.
func TestTurnsHurried(t *testing.T) {
	const n, turns = 10, 2
	f := newTurnsFixture(t, n, turns)
	f.u.opts.DrainTimeout = 2 * time.Second
	f.u.handedOver.Store(true)
	close(f.u.exitC)
	seen := map[int]bool{f.next(t): true, f.next(t): true}
	f.h.tmu.Lock()
	mode, active, waiting := f.h.tmode, f.h.tactive, f.h.waiting.Len()
	f.h.tmu.Unlock()
	if mode == turnsPaced && (active != turns || waiting != n-turns) {
		t.Fatalf("before the hurry: %d active, %d waiting; want %d and %d", active, waiting, turns, n-turns)
	}
	for range n - turns { // the others, when hurried
		seen[f.next(t)] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct connections turned, want %d", len(seen), n)
	}
}

// TestTurnTimeout: a turn whose connection is neither offered nor closed
// ends after Timeout, and the next one begins.
func TestTurnTimeout(t *testing.T) {
	f := newTurnsFixture(t, 3, 1)
	f.h.opts.Timeout = 50 * time.Millisecond
	f.u.handedOver.Store(true)
	close(f.u.exitC)
	for want := range 3 {
		if got := f.next(t); got != want {
			t.Fatalf("turn %d went to connection %d", want, got)
		}
	}
}

// TestTurnAfterClose: a connection closed before it registers takes no
// turn, and no slot.
func TestTurnAfterClose(t *testing.T) {
	f := newTurnsFixture(t, 2, 1)
	f.stops[0]()
	f.stops[1]()
	f.conns[0].Close()
	f.h.OnTurn(f.conns[0], func() { f.turned <- 100 })
	f.h.OnTurn(f.conns[1], func() { f.turned <- 1 })
	f.u.handedOver.Store(true)
	close(f.u.exitC)
	if got := f.next(t); got != 1 {
		t.Fatalf("turn went to %d, want the open connection 1", got)
	}
}
