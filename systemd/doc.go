// Package systemd speaks the parts of systemd's service protocol that handoff
// needs: sd_notify state messages (READY, RELOADING, MAINPID, STATUS,
// STOPPING, WATCHDOG), BARRIER, FDSTORE with descriptors, and socket
// activation with names.
//
// It is the only package of handoff that imports go-systemd. Running without
// systemd is not an error: every sender reports (false, nil) when
// NOTIFY_SOCKET is unset, after go-systemd's daemon.SdNotify:
//
//	(false, nil)  not running under systemd (NOTIFY_SOCKET unset); nothing sent
//	(false, err)  NOTIFY_SOCKET is set but sending failed
//	(true, nil)   the message was sent
//
// Environment variables that systemd sets for one process only
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, WATCHDOG_USEC, WATCHDOG_PID) are
// read once and removed from the environment, so they never reach a child.
package systemd
