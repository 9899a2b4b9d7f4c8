// Package keeper is what outlives a handoff that is killed: a small process
// of handoff's own binary (Main, started by Start) that holds copies of the
// generations' output pipes and of the listening sockets. While handoff
// lives it does nothing; when handoff dies it copies the generations' output
// until they exit and holds the sockets for --hold, offering them to a
// handoff started again with the same control socket (TakeHeld), so that
// connections wait in the accept queue instead of being refused.
package keeper
