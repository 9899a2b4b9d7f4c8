package lifecycle

import "time"

// Stops keeps the books of a process's stop signals (SIGTERM, SIGINT), the
// rule both modes share: the first signal, given a stop delay, has the
// process serve on for the delay before it stops; a signal during the delay
// ends it and begins the stop at once, counting as the first; after that,
// the second signal cuts the stop short and the third ends the process.
//
// The zero value has no stop delay. Stops only keeps the books; the machines
// carry out what it returns.
type Stops struct {
	Delay    time.Duration // the stop delay; 0 for none
	n        int           // signals counted
	delaying bool
}

// StopStep is what a stop signal asks for.
type StopStep int

const (
	StopBegin     StopStep = iota // begin the stop now
	StopDelay                     // serve on for Delay, then call DelayOver
	StopSkipDelay                 // a signal during the delay: begin the stop now
	StopAgain                     // the second signal: cut the stop short
	StopNow                       // the third signal or a later one: end now
)

// Signal counts one stop signal and returns what it asks for. delayable
// says whether a first signal may wait for the stop delay: it may not once a
// stop is under way by other means.
func (s *Stops) Signal(delayable bool) StopStep {
	if s.delaying {
		s.delaying, s.n = false, 1
		return StopSkipDelay
	}
	s.n++
	switch {
	case s.n >= 3:
		return StopNow
	case s.n == 2:
		return StopAgain
	case s.Delay > 0 && delayable:
		s.delaying = true
		return StopDelay
	}
	return StopBegin
}

// DelayOver ends the stop delay and reports whether it was running: false
// when a signal ended it first.
func (s *Stops) DelayOver() bool {
	was := s.delaying
	s.delaying = false
	return was
}

// Delaying reports whether the process serves on for the stop delay.
func (s *Stops) Delaying() bool { return s.delaying }
