//go:build linux

package spawn

import (
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/outtag"
	"github.com/handoff-dev/handoff/internal/linetail"
)

// outputs starts copying generation g's stdout and stderr pipes to
// handoff's: as they come without --tag-output, which leaves them byte for
// byte as they were; else each line tagged with g's generation, worker and
// pid (package outtag).
func (s *Starter) outputs(g *Process, outR, errR *os.File) (stdout, stderr *linetail.Tail) {
	if s.Config.TagOutput == "" {
		stdout, stderr = linetail.New(outR, os.Stdout, 10), linetail.New(errR, os.Stderr, 10)
	} else {
		if s.tagged.out == nil {
			s.tagged.out = s.sink(os.Stdout, "stdout")
			s.tagged.err = s.sink(os.Stderr, "stderr")
		}
		t := outtag.Tags{Gen: g.N, Worker: g.W, PID: g.PID, Ident: filepath.Base(g.Spec.Name)}
		stdout, stderr = linetail.NewLive(outR, s.tagged.out.Source(t), 10), linetail.NewLive(errR, s.tagged.err.Source(t), 10)
	}
	// Keep the tails still copying, for the wait at handoff's exit.
	s.tails = slices.DeleteFunc(s.tails, func(t *linetail.Tail) bool {
		select {
		case <-t.Done():
			return true
		default:
			return false
		}
	})
	s.tails = append(s.tails, stdout, stderr)
	return stdout, stderr
}

// FlushOutputs waits, at most wait in all, until the processes' output
// has reached handoff's own: at its exit, once every process and stray has
// ended, the last lines may still be in the pipes.
func (s *Starter) FlushOutputs(wait time.Duration) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for _, t := range s.tails {
		select {
		case <-t.Done():
		case <-deadline.C:
			return
		}
	}
}

// sink returns the sink of f, handoff's stream named stream: journald's
// native protocol if f is the journal's stream (and not --tag-output=stream)
// and its socket answers, else f itself in --log-format.
func (s *Starter) sink(f *os.File, stream string) *outtag.Sink {
	opt := outtag.Options{Format: outtag.Text, Stream: stream}
	if s.Config.LogFormat == "json" {
		opt.Format = outtag.JSON
	}
	to := "stream"
	if s.Config.TagOutput != "stream" && outtag.IsJournalStream(f) {
		j, err := outtag.OpenJournal(outtag.JournalSocket)
		if err != nil {
			s.Log.Warn("handoff's "+stream+" is the journal, but its socket does not answer: the program's lines go to the stream, tagged in --log-format",
				"event", "output.journal_unavailable", "stream", stream, "err", err)
		} else {
			opt.Journal, to = j, "journal"
		}
	}
	s.Log.Info("program's output tagged", "event", "output.tagged", "stream", stream, "to", to)
	return outtag.NewSink(f, opt)
}
