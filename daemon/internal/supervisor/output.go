//go:build linux

package supervisor

import (
	"os"
	"path/filepath"
	"sync"

	"github.com/handoff-dev/handoff/daemon/internal/outtag"
	"github.com/handoff-dev/handoff/internal/linetail"
)

// tagged holds handoff's stdout and stderr as --tag-output makes them, set
// up at the first generation's start: one supervisor runs in a process.
var tagged struct {
	once     sync.Once
	out, err *outtag.Sink
}

// outputs starts copying generation g's stdout and stderr pipes to
// handoff's: as they come without --tag-output, which leaves them byte for
// byte as they were; else each line tagged with g's generation, worker and
// pid (package outtag).
func (s *supervisor) outputs(g *generation, outR, errR *os.File) (stdout, stderr *linetail.Tail) {
	if s.cfg.TagOutput == "" {
		return linetail.New(outR, os.Stdout, 10), linetail.New(errR, os.Stderr, 10)
	}
	tagged.once.Do(func() {
		tagged.out = s.sink(os.Stdout, "stdout")
		tagged.err = s.sink(os.Stderr, "stderr")
	})
	t := outtag.Tags{Gen: g.N, Worker: g.W, PID: g.PID, Ident: filepath.Base(g.Spec.Name)}
	return linetail.NewLive(outR, tagged.out.Source(t), 10), linetail.NewLive(errR, tagged.err.Source(t), 10)
}

// sink returns the sink of f, handoff's stream named stream: journald's
// native protocol if f is the journal's stream (and not --tag-output=stream)
// and its socket answers, else f itself in --log-format.
func (s *supervisor) sink(f *os.File, stream string) *outtag.Sink {
	opt := outtag.Options{Format: outtag.Text, Stream: stream}
	if s.cfg.LogFormat == "json" {
		opt.Format = outtag.JSON
	}
	to := "stream"
	if s.cfg.TagOutput != "stream" && outtag.IsJournalStream(f) {
		j, err := outtag.OpenJournal(outtag.JournalSocket)
		if err != nil {
			s.log.Warn("handoff's "+stream+" is the journal, but its socket does not answer: the program's lines go to the stream, tagged in --log-format",
				"event", "output.journal_unavailable", "stream", stream, "err", err)
		} else {
			opt.Journal, to = j, "journal"
		}
	}
	s.log.Info("program's output tagged", "event", "output.tagged", "stream", stream, "to", to)
	return outtag.NewSink(f, opt)
}
