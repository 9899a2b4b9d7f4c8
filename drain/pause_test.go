package drain_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// While paused, the Drainer accepts nothing — a new connection waits in the
// listener's queue — and serves the connections it has; Resume serves the one
// that waited; Activity counts it all; Drain ends a pause.
func TestPauseResume(t *testing.T) {
	d, addr := serveDrainer(t, time.Second, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	c1, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	r1 := bufio.NewReader(c1)
	request(t, c1, r1)
	if a := d.Activity(); a != (drain.Activity{Accepted: 1, Requests: 1, Answered: 1}) {
		t.Fatalf("after one request: %+v", a)
	}

	d.Pause()
	d.Pause() // idempotent
	if !d.Paused() {
		t.Fatal("not paused")
	}
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got := make(chan error, 1)
	go func() {
		if _, err := io.WriteString(c2, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"); err != nil {
			got <- err
			return
		}
		_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	// The connection it has is served on; the new one waits.
	request(t, c1, r1)
	if a := d.Activity(); a.Accepted != 1 || a.Answered != 2 {
		t.Fatalf("while paused: %+v, want 1 accepted and 2 answered", a)
	}
	select {
	case err := <-got:
		t.Fatalf("the connection made while paused was answered (%v)", err)
	default:
	}

	d.Resume()
	if err := <-got; err != nil {
		t.Fatalf("the connection that waited: %v", err)
	}
	if a := d.Activity(); a != (drain.Activity{Accepted: 2, Requests: 3, Answered: 3}) {
		t.Fatalf("after Resume: %+v", a)
	}

	d.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c1.Close()
	c2.Close()
	if st := d.Drain(ctx); st.Cut != 0 {
		t.Fatalf("drain while paused: %+v", st)
	}
	if d.Paused() {
		t.Error("still paused after Drain")
	}
}
