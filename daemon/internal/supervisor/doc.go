// Package supervisor runs `handoff run`: it opens the sockets and the
// control socket, then its one goroutine turns signals, control requests,
// the changes --watch sees (package watch), timers and what the processes
// do into the machine's events, steps the machine, and carries out its
// actions — starting processes (package spawn), signalling them, relaying
// connections between them (package relay), and the stop. It keeps beside
// each gen.Gen what is the process's own: its handles and its timers. It
// answers the control socket's requests (status, signal) and serves
// --metrics.
package supervisor
