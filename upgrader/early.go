package upgrader

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// tableflipSentinel is the variable tableflip sets in the environment of
// the generations it starts (and New takes out of this process's, so that
// the programs a generation starts do not inherit it).
const tableflipSentinel = "TABLEFLIP_HAS_PARENT_7DIU3"

// early is set going as the process starts, before its main runs, in a
// process whose environment has tableflip's variable: a new generation,
// unless it was inherited (see New); nil in any other process.
var early = startEarly()

// earlyStart pays, in the background, a cost a new generation would
// otherwise pay on its way to serving: the first signal.Notify of a
// process, which starts the runtime's signal thread (about a millisecond
// on a slow machine). The signal it catches is SIGPIPE, which adopt needs
// caught anyway while fd 2 is the parent's pipe. New gives SIGPIPE its
// usual handling back if adopt does not take it (see release).
type earlyStart struct {
	pipeC chan os.Signal
	done  chan struct{} // closed once signal.Notify has returned
	once  sync.Once     // the channel is taken or let go, once
}

func startEarly() *earlyStart {
	if os.Getenv(tableflipSentinel) == "" {
		return nil
	}
	e := &earlyStart{pipeC: make(chan os.Signal, 1), done: make(chan struct{})}
	go func() {
		signal.Notify(e.pipeC, syscall.SIGPIPE)
		close(e.done)
	}()
	return e
}

// takePipeSignal returns a channel on which SIGPIPE is caught: the early
// one the first time, once it is set up, else a new one.
func (e *earlyStart) takePipeSignal() chan os.Signal {
	var c chan os.Signal
	if e != nil {
		e.once.Do(func() {
			<-e.done
			c = e.pipeC
		})
	}
	if c == nil {
		c = make(chan os.Signal, 1)
	}
	// Again for the early channel: the program may have called
	// signal.Reset since. It costs nothing if the channel still catches.
	signal.Notify(c, syscall.SIGPIPE)
	return c
}

// release stops catching SIGPIPE on the early channel unless it was taken.
// The Notify is over when it returns (a program that goes on to ignore
// SIGPIPE is not undone by it); the Stop, which waits for the runtime's
// signal thread, is made in the background.
func (e *earlyStart) release() {
	if e == nil {
		return
	}
	e.once.Do(func() {
		<-e.done
		go signal.Stop(e.pipeC)
	})
}
