// Package upgrader gives a Go server zero-downtime restarts: on SIGHUP it
// starts the new binary with the listening sockets, waits until the new
// process is ready, then drains the old one without losing a request.
//
// A whole hot-restartable server:
//
//	u, err := upgrader.New(upgrader.Options{PIDFile: "/run/app.pid"})
//	if err != nil { log.Fatal(err) }
//	defer u.Stop()
//	ln, err := u.Listen("tcp", "127.0.0.1:8080") // inherited, else from systemd, else bound fresh
//	if err != nil { log.Fatal(err) }
//	srv := &http.Server{Handler: mux}
//	if err := u.Serve(srv, ln); err != nil { log.Fatal(err) } // ready, serve, drain on handoff or stop
//
// # Generations
//
// Each process is one generation. It is in one state at a time, changed by
// one goroutine of the Upgrader only, so that two events never race; the
// states, the events that change them, and which states are final:
//
//	Starting   from New until Ready. SIGHUP is queued; Upgrade returns ErrNotReady.
//	Ready      serving. SIGHUP or Upgrade starts the next generation:
//	           → Upgrading.
//	           SIGTERM, SIGINT or Stop → Stopping; with Options.StopDelay,
//	           SIGTERM or SIGINT → Delaying.
//	Upgrading  the next generation is starting with copies of the sockets.
//	           When it calls Ready it bakes (Options.Bake; see below): this
//	           generation pauses accepting, keeps its sockets and serves the
//	           connections it has, until the new one proves it serves →
//	           HandedOver. When it exits, crashes, misses UpgradeTimeout or
//	           fails its bake, it is killed → Ready again (accepting again,
//	           with the connections that waited), and Upgrade returns an
//	           *UpgradeError (Kind ErrBake for a failed bake). A SIGHUP or
//	           Upgrade now queues one more upgrade (see below).
//	HandedOver Exit is closed; the generation drains and the process exits.
//	           Final.
//	Delaying   a stop was asked: the generation serves and accepts on for
//	           StopDelay, Health answers 503, upgrades are refused. When the
//	           delay ends, or on a second stop signal, or Stop → Stopping.
//	Stopping   new connections are held back, and those queued taken
//	           (see below); Exit is closed; the generation drains and the
//	           process exits. A further SIGTERM or SIGINT cuts the drain
//	           short. Final.
//
// An upgrade asked while another is pending but has not started its process
// yet joins it. One asked once the new process has started is queued, to run
// once after it — several make one — so that a binary replaced meanwhile is
// always picked up: by the new generation when the attempt succeeded (the
// old one passes the request on), by this one when it failed. `handoff run`
// follows the same rule for its reloads.
//
// A Starting generation whose parent dies (killed with SIGKILL during the
// handover) does not stop: at Ready it finds the parent gone, and serves on
// as the main process — it writes the PID file, tells systemd its pid
// (MAINPID=, READY=1) and logs why. Until Ready its stderr is a pipe to the
// parent, so it catches SIGPIPE meanwhile, and takes its real stderr back as
// soon as the parent dies.
//
// A SIGHUP that reaches a generation while its predecessor is still draining
// is not refused, as tableflip would: it is carried out as soon as the
// predecessor has exited, and several such SIGHUPs make one upgrade. A
// predecessor still alive 5 s past the drain deadline it announced is killed.
//
// # The bake window
//
// A new generation that calls Ready is not taken at its word: the old one
// hands over only once the new one has proved that it serves, for at most
// Options.Bake (DefaultBake, 10 s). Meanwhile the old generation takes no
// new connection — both hold the sockets, so new connections reach the new
// one alone, and those it does not take wait in the accept queue — and
// serves the connections it has. The new one proves itself by answering a
// request (its Drainers count them and report over the control channel),
// or, where no request comes, by answering the old one's own "OPTIONS *".
// It is rolled back — killed, while the old one takes the connections that
// waited and serves on — when it exits, when connections wait in the accept
// queue for half a second untaken (Linux), when 3 of its requests wait 2 s
// with none answered, or when the window ends unproven; the upgrade then
// fails with ErrBake and may be tried again. Measured (issue 26): a release
// that calls Ready and never accepts, under 70 POSTs/s — 979 of 980 requests
// failed over the 14 s after SIGHUP before, 0 of 980 with the bake, rolled
// back 0.53 s after it said it was ready.
//
// This part of the handover is handoff's, not tableflip's: tableflip hands
// over when the child writes to its ready pipe, and then closes the
// parent's copies of the sockets and can start no other child; a child
// that bakes writes to that pipe only once the parent has seen it serve.
// tableflip still passes the descriptors, starts the child and watches it.
//
// # Draining without losing a request
//
// Serve and ServeDrainer drain through package drain's Drainer, which says what a
// drain guarantees: the old generation closes its copy of each listener (the
// sockets stay open in the new generation), answers every further request
// with "Connection: close", lets requests in flight finish up to
// DrainTimeout, closes an idle keep-alive connection only after IdleGrace
// with nothing received, sends HTTP/2 connections a GOAWAY, and waits for
// hijacked connections — tell their handlers to finish from the OnDrain hook
// of the Drainer given to ServeDrainer (see NewDrainer), or when Exit is closed.
// Background work started with Go is waited for after the connections,
// within the same deadline. With Options.MoveIdleConns, a generation that
// hands over moves its idle HTTP/1.1 keep-alive connections to the new one
// (through Handover) instead of closing them.
//
// # systemd
//
// When NOTIFY_SOCKET is set the Upgrader sends READY=1 on first start;
// RELOADING=1 with MONOTONIC_USEC when an upgrade begins; MAINPID=<new pid>
// with READY=1 in one datagram, then BARRIER=1, when the new generation is
// ready; READY=1 with a STATUS= that says why when an upgrade fails; and
// STOPPING=1 on a real stop only. WATCHDOG=1 pings go out every half of
// WatchdogSec= from whichever generation is the main process. This makes both
// Type=notify and Type=notify-reload units track the new pid, and makes
// systemctl reload return when, and only when, the new generation is ready:
//
//	[Service]
//	Type=notify-reload        # systemd 253+; on older systems Type=notify with
//	                          # ExecReload=/bin/kill -HUP $MAINPID
//	ExecStart=/usr/local/bin/app -addr 127.0.0.1:8080
//	NotifyAccess=main
//	# systemd waits on stop only for a main process it forked; after a
//	# reload it did not fork the new one, so wait for the drain here:
//	ExecStop=/bin/sh -c 'kill -TERM $MAINPID; while kill -0 $MAINPID 2>/dev/null; do sleep 0.1; done'
//	TimeoutStopSec=40         # more than the drain timeout
//	FileDescriptorStoreMax=8  # keep the sockets open across restarts (FDStore)
//
// With FileDescriptorStoreMax= (systemd sets $FDSTORE from version 254; set
// Options.FDStore before that), each generation also hands its listening
// sockets to systemd's fd store once ready (FDSTORE=1, FDNAME=handoff-fdstore),
// so that they stay open across `systemctl restart` and a crash: clients wait
// in the backlog instead of being refused, and the next start finds the
// sockets by address. A Unix socket's file then stays in place when the
// process restarts. On a plain stop (`systemctl stop`) the sockets are taken
// out of the store, and the stop waits until systemd has closed its copies.
//
// A stop closes the sockets for good where no one else holds them (not a
// .socket unit's, nor the fd store's across a restart). Before it drains,
// it holds new connections back from them — a TCP socket drops new SYNs, so
// that a client's connect is refused once the socket closes, a second
// later; a Unix socket's file is removed — and, for up to a second, lets
// its servers take the connections already queued. A connection left
// queued when its socket closes would be reset after its client had sent
// its request. The log says how it went (events stop.held,
// stop.hold_failed).
//
// The variables systemd sets for one process only (LISTEN_*, WATCHDOG_*) are
// consumed at New and never reach the next generation.
package upgrader
