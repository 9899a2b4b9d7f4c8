package upgrader

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// tableflipSentinel is the variable tableflip sets in the environment of
// the generations it starts.
const tableflipSentinel = "TABLEFLIP_HAS_PARENT_7DIU3"

// early is what a new generation sets going as the process starts, before
// its main runs; nil in any other process.
var early = startEarly()

// earlyStart pays, in the background, two costs a new generation would
// otherwise pay one after the other on its way to serving: the first
// signal.Notify of a process, which starts the runtime's signal thread
// (about a millisecond on a slow machine), and the first use of local time,
// which reads the zone file for the first log line. The signal it catches
// is SIGPIPE, which adopt needs caught anyway while fd 2 is the parent's
// pipe; a process that does not take it (see takePipeSignal) gets SIGPIPE's
// usual handling back in New.
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
		defer close(e.done)
		signal.Notify(e.pipeC, syscall.SIGPIPE)
		_, _ = time.Now().Zone()
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
		signal.Notify(c, syscall.SIGPIPE)
	}
	return c
}

// release stops catching SIGPIPE on the early channel unless it was taken,
// in the background (signal.Stop waits for the runtime's signal thread).
func (e *earlyStart) release() {
	if e == nil {
		return
	}
	e.once.Do(func() {
		go func() {
			<-e.done
			signal.Stop(e.pipeC)
		}()
	})
}
