package lifecycle

// Queue is the rule both modes follow for a reload (the daemon) or an
// upgrade (the library) asked while another is on its way: asked before the
// new process has started, it joins the one pending; asked after, it is
// queued, to run once after the one under way, and several queued make one —
// so that a binary replaced meanwhile is always picked up. W is what a
// caller waits on for the outcome.
//
// The zero value is an empty queue. Queue only keeps the books; the machines
// decide when a reload starts and ends.
type Queue[W any] struct {
	waiters []W // wait for the reload pending or under way
	queued  bool
	later   []W // wait for the queued one
}

// Join adds ws to the waiters of the reload pending or under way.
func (q *Queue[W]) Join(ws ...W) { q.waiters = append(q.waiters, ws...) }

// Enqueue queues a reload after the one under way, with ws waiting for it
// (none: nobody waits), and reports whether none was queued before (the
// first ask, to log).
func (q *Queue[W]) Enqueue(ws ...W) (first bool) {
	first = !q.queued
	q.queued = true
	q.later = append(q.later, ws...)
	return first
}

// Queued reports whether a reload is queued.
func (q *Queue[W]) Queued() bool { return q.queued }

// Finish ends the reload under way: it returns its waiters, to be answered,
// and forgets them.
func (q *Queue[W]) Finish() []W {
	w := q.waiters
	q.waiters = nil
	return w
}

// Promote makes the queued reload the pending one, its waiters with it, and
// reports whether one was queued.
func (q *Queue[W]) Promote() bool {
	if !q.queued {
		return false
	}
	q.waiters, q.later, q.queued = append(q.waiters, q.later...), nil, false
	return true
}

// Drop forgets the queued reload and returns its waiters, to be answered (a
// stop, or a new process that carries it out itself).
func (q *Queue[W]) Drop() []W {
	w := q.later
	q.later, q.queued = nil, false
	return w
}
