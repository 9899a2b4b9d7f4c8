// Package reaper keeps handoff's orphans in its care: it makes handoff a
// child subreaper (or finds it is PID 1), reaps the zombies of processes it
// did not start without ever taking the exit status of one it did, and lists
// the live children that no generation owns — what a program that
// daemonized, or a helper whose parent died, left behind.
package reaper
