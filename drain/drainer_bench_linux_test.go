//go:build linux

package drain_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/drain"
)

// BenchmarkDrainHijackedCloses measures the drain's cost for each hijacked
// connection (a WebSocket) closed while it drains, a few at a time, with
// 2,000 of them open at first. Each close wakes the drain's loop:
// its cost must not grow with the connections still open, as it did while
// each wake swept every hijacked connection (quadratic in all). Reports
// the drain's time and its process's CPU time per connection closed.
func BenchmarkDrainHijackedCloses(b *testing.B) {
	// 2,000 connections closed 16 at a time, 1 ms apart: the pace of a
	// handover's commits (10,000 in about 0.7 s, in batches).
	const n, closeBatch, closeEvery = 2000, 16, time.Millisecond
	for range b.N {
		b.StopTimer()
		conns := make(chan net.Conn, n)
		hold := make(chan struct{})
		d, addr := serveDrainer(b, time.Second, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\n\r\n")
			brw.Flush()
			conns <- c
			<-hold
		}))
		var clients []net.Conn
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, c)
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.Contains(line, "101") {
				b.Fatalf("%q", line)
			}
		}
		server := make([]net.Conn, 0, n)
		for range n {
			server = append(server, <-conns)
		}
		began := make(chan struct{})
		d.OnDrain(func() { close(began) })
		b.StartTimer()
		cpu := processCPU()
		done := make(chan drain.Stats, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			done <- d.Drain(ctx)
		}()
		<-began // counted open, then closed one after another
		for i, c := range server {
			c.Close()
			if i%closeBatch == closeBatch-1 {
				time.Sleep(closeEvery) // as a handover's commits come
			}
		}
		st := <-done
		b.StopTimer()
		b.ReportMetric(float64((processCPU()-cpu).Microseconds())/n, "cpu-µs/close")
		close(hold)
		for _, c := range clients {
			c.Close()
		}
		if st.Hijacked != n || st.Cut != 0 {
			b.Fatalf("stats %+v: want %d hijacked, none cut", st, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n*b.N), "µs/close")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
