package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/quic"
	"github.com/handoff-dev/handoff/upgrader"
)

// costResult is the steering program's cost per datagram, measured at
// saturation: one thread sends datagrams as fast as sendmmsg takes them to
// a SO_REUSEPORT group of two sockets on loopback, where the kernel delivers
// each within the sender's system call (so the sender's CPU time per
// datagram includes the socket lookup, the group's selection and the
// queueing), in rounds alternating a group without the program (the
// kernel's hash picks the socket) and one steered by this module's program.
type costResult struct {
	datagrams      int             // per round
	without, with  []time.Duration // per datagram, one per round
	runs           uint64          // the program's runs counted by the kernel's BPF statistics
	runTime        time.Duration   // their total time
	statsAvailable bool
}

// costBatch is how many datagrams one sendmmsg carries.
const costBatch = 64

// costPayload is the datagrams' size: a QUIC short-header packet, 1-RTT, as
// small as the program passes (the program reads its first 16 bytes only).
const costPayload = 64

// measureCost runs rounds rounds of n datagrams into each group.
func measureCost(rounds, n int) (costResult, error) {
	res := costResult{datagrams: n}
	// The steered group, built as a generation builds it: quic.Listen on an
	// Upgrader of this process (generation 1), active from Ready.
	u, err := upgrader.New(upgrader.Options{NoSignals: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return res, err
	}
	defer u.Stop()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	steeredAddr := freeUDPAddr()
	s, err := quic.Listen(u, steeredAddr)
	if err != nil {
		return res, err
	}
	defer s.Close()
	if err := u.Ready(); err != nil {
		return res, err
	}
	plainAddr := freeUDPAddr()
	var socks []*net.UDPConn
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for _, a := range []string{steeredAddr, plainAddr, plainAddr} {
		c, err := reuseport(a)
		if err != nil {
			return res, err
		}
		socks = append(socks, c)
	}
	if err := smallBuffer(s.PacketConn()); err != nil {
		return res, err
	}
	for _, c := range socks {
		if err := smallBuffer(c); err != nil {
			return res, err
		}
	}
	// A short header (fixed bit set) with a connection ID of this
	// generation's: the bulk of a QUIC server's traffic.
	id, err := s.ConnectionIDGenerator().GenerateConnectionID()
	if err != nil {
		return res, err
	}
	payload := make([]byte, costPayload)
	payload[0] = 0x40
	copy(payload[1:], id.Bytes())

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	snd, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer snd.Close()
	pc := ipv4.NewPacketConn(snd)
	batch := func(to string) ([]ipv4.Message, error) {
		ua, err := net.ResolveUDPAddr("udp4", to)
		if err != nil {
			return nil, err
		}
		msgs := make([]ipv4.Message, costBatch)
		for i := range msgs {
			msgs[i] = ipv4.Message{Buffers: [][]byte{payload}, Addr: ua}
		}
		return msgs, nil
	}
	toSteered, err := batch(steeredAddr)
	if err != nil {
		return res, err
	}
	toPlain, err := batch(plainAddr)
	if err != nil {
		return res, err
	}
	// The sender's CPU time, not the wall clock's: on a shared machine the
	// thread waits for a CPU now and then, which is no cost of the path.
	// The kernel charges the datagrams' delivery (softirq, run within the
	// call) to the thread, unless it defers it to ksoftirqd.
	send := func(msgs []ipv4.Message) (time.Duration, error) {
		start, err := threadCPU()
		if err != nil {
			return 0, err
		}
		for sent := 0; sent < n; {
			k, err := pc.WriteBatch(msgs, 0)
			if err != nil {
				return 0, fmt.Errorf("sendmmsg: %w", err)
			}
			sent += k
		}
		end, err := threadCPU()
		if err != nil {
			return 0, err
		}
		return (end - start) / time.Duration(n), nil
	}
	// Warm both paths, then alternate.
	if _, err := send(toPlain); err != nil {
		return res, err
	}
	if _, err := send(toSteered); err != nil {
		return res, err
	}
	for range rounds {
		d, err := send(toPlain)
		if err != nil {
			return res, err
		}
		res.without = append(res.without, d)
		if d, err = send(toSteered); err != nil {
			return res, err
		}
		res.with = append(res.with, d)
	}
	// The kernel's own timing of the program, in a round of its own: the
	// statistics add two clock reads to every run.
	closer, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return res, nil // Linux before 5.8: the difference alone
	}
	defer closer.Close()
	before, err := s.Stats()
	if err != nil {
		return res, err
	}
	if _, err := send(toSteered); err != nil {
		return res, err
	}
	after, err := s.Stats()
	if err != nil {
		return res, err
	}
	res.statsAvailable = true
	res.runs, res.runTime = after.Runs-before.Runs, after.RunTime-before.RunTime
	return res, nil
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, os.NewSyscallError("clock_gettime CLOCK_THREAD_CPUTIME_ID", err)
	}
	return time.Duration(ts.Nano()), nil
}

// reuseport binds a UDP socket with SO_REUSEPORT to addr.
func reuseport(addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("binding %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// smallBuffer shrinks c's receive buffer: nobody reads the sockets, so that
// after the first few datagrams each is dropped once the group has chosen
// its socket, in both groups alike.
func smallBuffer(c *net.UDPConn) error { return c.SetReadBuffer(1) }

// median returns the median of d.
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// printCost writes the cost section.
func printCost(w io.Writer, r costResult, err error) {
	fmt.Fprintf(w, "\nThe steering program's cost per datagram, at saturation — one thread sends %d-byte QUIC short-header datagrams (sendmmsg, %d a call) as fast as the kernel takes them into a SO_REUSEPORT group of two sockets on loopback, delivered (and dropped, the sockets unread) within the sending call, whose CPU time is counted; %d rounds of %d datagrams, alternating:\n\n",
		costPayload, costBatch, len(r.with), r.datagrams)
	if err != nil {
		fmt.Fprintf(w, "could not measure: %v\n", err)
		return
	}
	fmt.Fprintln(w, "| group | sender's CPU ns per datagram, median (min – max) | datagrams per CPU-second |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, x := range []struct {
		label string
		d     []time.Duration
	}{{"without a program (the kernel's hash picks the socket)", r.without}, {"steered (this module's SK_REUSEPORT program)", r.with}} {
		m := median(x.d)
		fmt.Fprintf(w, "| %s | %d (%d – %d) | %.0f |\n", x.label, m.Nanoseconds(), slices.Min(x.d).Nanoseconds(), slices.Max(x.d).Nanoseconds(), float64(time.Second)/float64(max(m, 1)))
	}
	diffs := make([]time.Duration, len(r.with))
	for i := range r.with {
		diffs[i] = r.with[i] - r.without[i]
	}
	fmt.Fprintf(w, "\nCost per datagram: %d ns, the median of the rounds' differences (each round's two runs back to back; min %d, max %d)",
		median(diffs).Nanoseconds(), slices.Min(diffs).Nanoseconds(), slices.Max(diffs).Nanoseconds())
	if r.statsAvailable && r.runs > 0 {
		fmt.Fprintf(w, "; %.0f ns as the kernel times the program itself (kernel.bpf_stats: %v over %d runs)", float64(r.runTime)/float64(r.runs), r.runTime.Round(time.Microsecond), r.runs)
	}
	fmt.Fprintln(w, ". Goal: under 1 µs.")
}
