//go:build linux

package outtag_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/outtag"
	"github.com/handoff-dev/handoff/internal/linetail"
)

// benchLines is what one read of a busy program's pipe holds: 64 lines of
// 100 bytes, an access log's.
var benchLines = []byte(strings.Repeat(`127.0.0.1 - - [06/Dec/2026:11:25:45 +0000] "GET /api/items?page=2 HTTP/1.1" 200 5123 "-" "curl/8"`+"\n", 64))

// benchmark writes benchLines through a Source of k, b.N times, and
// reports the cost of one line.
func benchmark(b *testing.B, k *outtag.Sink) {
	src := k.Source(outtag.Tags{Gen: 12, Worker: 3, PID: 123456, Ident: "app"})
	b.SetBytes(int64(len(benchLines)))
	b.ReportAllocs()
	for b.Loop() {
		src.Write(benchLines)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/line")
}

// devNull is the stream of the benchmarks: each batch costs its write(2),
// as on handoff's stdout.
func devNull(b *testing.B) io.Writer {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkUntagged is the reference: the same lines written to the
// stream as they come, as handoff does without --tag-output.
func BenchmarkUntagged(b *testing.B) {
	w := devNull(b)
	b.SetBytes(int64(len(benchLines)))
	for b.Loop() {
		w.Write(benchLines)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/line")
}

func BenchmarkText(b *testing.B) {
	benchmark(b, outtag.NewSink(devNull(b), outtag.Options{Format: outtag.Text, Stream: "stdout"}))
}

func BenchmarkJSON(b *testing.B) {
	benchmark(b, outtag.NewSink(devNull(b), outtag.Options{Format: outtag.JSON, Stream: "stdout"}))
}

// BenchmarkJournal sends each line to a socket read as journald reads
// it: the cost is mostly the datagram's system call.
func BenchmarkJournal(b *testing.B) {
	fj := newFakeJournalB(b)
	j, err := outtag.OpenJournal(fj)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	benchmark(b, outtag.NewSink(devNull(b), outtag.Options{Stream: "stdout", Journal: j, Idle: time.Hour}))
}

// newFakeJournalB binds a socket that reads and drops datagrams, and
// returns its path.
func newFakeJournalB(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1<<16)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	return path
}

// BenchmarkPipe is handoff's whole path for a process's output: lines
// written to a pipe, read by linetail (its last lines kept) and passed on
// untagged (linetail.New, as without --tag-output) or tagged
// (linetail.NewLive into a Source), to /dev/null. The writer and the
// reader run at once, on 2 cores when there are.
func BenchmarkPipe(b *testing.B) {
	for _, c := range []struct {
		name   string
		format outtag.Format
	}{{"untagged", -1}, {"text", outtag.Text}, {"json", outtag.JSON}} {
		b.Run(c.name, func(b *testing.B) {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			var tail *linetail.Tail
			if c.format < 0 {
				tail = linetail.New(r, devNull(b), 10)
			} else {
				k := outtag.NewSink(devNull(b), outtag.Options{Format: c.format, Stream: "stdout"})
				tail = linetail.NewLive(r, k.Source(outtag.Tags{Gen: 12, Worker: 3, PID: 123456}), 10)
			}
			b.SetBytes(int64(len(benchLines)))
			for b.Loop() {
				w.Write(benchLines)
			}
			w.Close()
			<-tail.Done()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/line")
		})
	}
}
