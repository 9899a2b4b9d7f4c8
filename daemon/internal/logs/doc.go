// Package logs makes the daemon's loggers: the handler --log-format names,
// for handoff and for its keeper, and the logger for handoff's own upgrader,
// whose records it puts in the daemon's keys (one key per fact; docs/ lists
// them).
package logs
