package upgrader

import (
	"context"
	"errors"
	"sync"
	"time"
)

// jobs tracks the background work started with Go.
type jobs struct {
	mu      sync.Mutex
	closed  bool // the drain has begun: no new job
	running int
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

func newJobs() *jobs {
	ctx, cancel := context.WithCancel(context.Background())
	return &jobs{ctx: ctx, cancel: cancel}
}

// Go runs f in its own goroutine as background work of this generation —
// an upload still being encoded after its request returned, a batch that
// must not be cut. The generation does not exit, after a handover or on a
// stop, until every such f has returned, within DrainTimeout.
//
// During the drain (see Serve), in order: the generation stops accepting;
// requests in flight finish; then jobs are waited for; at the drain deadline,
// or on a second stop signal, f's ctx is cancelled so that f can finish its
// current unit of work and return — the process exits a second later at the
// latest. After a handover the new generation takes new work while the old
// one finishes its jobs. An error f returns is logged with the generation.
//
// Go returns ErrDraining, and does not run f, once the drain has begun.
func (u *Upgrader) Go(f func(ctx context.Context) error) error {
	j := u.jobs
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrDraining
	}
	j.running++
	j.wg.Add(1)
	j.mu.Unlock()
	go func() {
		defer j.wg.Done()
		defer func() {
			j.mu.Lock()
			j.running--
			j.mu.Unlock()
		}()
		if err := f(j.ctx); err != nil && !errors.Is(err, context.Canceled) {
			u.log.Error("background job failed", "event", "job.failed", "err", err)
		}
	}()
	return nil
}

// close refuses new jobs and returns how many run.
func (j *jobs) close() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	return j.running
}

// wait waits for the jobs until ctx ends, then cancels theirs and gives them
// grace to return. It reports how many were cancelled.
func (j *jobs) wait(ctx context.Context, grace time.Duration) (cancelled int) {
	done := make(chan struct{})
	go func() { j.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	j.mu.Lock()
	cancelled = j.running
	j.mu.Unlock()
	j.cancel()
	select {
	case <-done:
	case <-time.After(grace):
	}
	return cancelled
}
