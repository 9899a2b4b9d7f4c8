'use strict';
// handoff for Node.js: take the listening sockets handoff (or systemd) passes,
// and drain without losing a request when told to stop.
//
//   const handoff = require('handoff');
//   const server = http.createServer(app);
//   handoff.serve(server, { name: 'web', port: 8080 });
//
// serve listens on the socket passed as LISTEN_FDS (by its name in
// LISTEN_FDNAMES, else the first), or binds port/host when none was passed,
// and on SIGTERM or SIGINT drains:
//
//   1. it stops accepting, once what waits in the accept queue is taken (the
//      next generation, which holds the same socket, accepts from then on;
//      alone, new connections are refused) — without Node's own
//      server.close(), which since Node 19 closes every idle keep-alive
//      connection at once, racing a client that is sending its next request
//      on one;
//   2. every response from then on carries Connection: close;
//   3. a keep-alive connection is closed only once it has been idle for
//      idleGrace since the drain began, with nothing received (its
//      bytes-read count unchanged);
//   4. requests in flight have until drainTimeout; then what is left is
//      destroyed;
//   5. upgraded connections (WebSocket) are handed to onDrain, once, so the
//      program can send its close frame; they too are destroyed at the
//      deadline;
//   6. the process exits 0 (unless exit: false; then the returned drain()
//      promise resolves).
//
// Readiness: Node's core cannot send READY=1 to $NOTIFY_SOCKET (a Unix
// datagram socket), so run it with `handoff run --ready accept`, which sees
// the server waiting for connections.

const net = require('net');

const SD_LISTEN_FDS_START = 3;

/**
 * listenFds returns the descriptors passed by handoff or systemd, as
 * [{fd, name}], or [] when none were passed to this process. It checks
 * LISTEN_PID and removes LISTEN_* from the environment, so that no child
 * takes them.
 */
function listenFds() {
  const env = process.env;
  const pid = env.LISTEN_PID;
  const n = parseInt(env.LISTEN_FDS || '0', 10);
  const names = (env.LISTEN_FDNAMES || '').split(':');
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pid !== String(process.pid) || !(n > 0)) return [];
  const out = [];
  for (let i = 0; i < n; i++) out.push({ fd: SD_LISTEN_FDS_START + i, name: names[i] || '' });
  return out;
}

let passed = null;
function passedFds() {
  if (passed === null) passed = listenFds();
  return passed;
}

/**
 * listenTarget returns what server.listen takes for the socket named name
 * (or the first passed one), or null when none was passed.
 */
function listenTarget(name) {
  const fds = passedFds();
  if (fds.length === 0) return null;
  let f = fds[0];
  if (name) {
    f = fds.find((x) => x.name === name);
    if (!f) {
      throw new Error(`handoff: no socket named "${name}" was passed (passed: ${fds.map((x) => x.name || '?').join(', ')}) — give --listen ${name}=ADDR to handoff run`);
    }
  }
  return { fd: f.fd };
}

/**
 * serve listens with server and drains it on SIGTERM or SIGINT. Options:
 *   name          the socket's name in LISTEN_FDNAMES (default: the first)
 *   port, host    what to bind when no socket was passed (default 8080)
 *   idleGrace     ms a keep-alive connection must be idle before it is closed (1000)
 *   drainTimeout  ms requests in flight have once draining (30000)
 *   onDrain       function(socket) for each upgraded connection when the drain begins
 *   exit          exit the process (0) once drained (default true)
 *   signals       the signals that start the drain (['SIGTERM', 'SIGINT'])
 * It returns { drain }, where drain() starts the drain by hand and returns a
 * promise of { conns, idleClosed, cut, ms }.
 */
function serve(server, opts = {}) {
  const idleGrace = opts.idleGrace ?? 1000;
  const drainTimeout = opts.drainTimeout ?? 30000;
  const exit = opts.exit ?? true;
  const conns = new Map(); // socket -> { active, bytesAtIdle, idleSince }
  const upgraded = new Set();
  let draining = false;

  server.on('connection', (socket) => {
    conns.set(socket, { active: 0, res: null, closing: false, bytesAtIdle: 0, idleSince: Date.now() });
    socket.on('close', () => conns.delete(socket));
  });
  server.on('request', (req, res) => {
    const c = conns.get(req.socket);
    if (c) {
      c.active++;
      c.res = res;
    }
    if (draining) res.shouldKeepAlive = false; // Connection: close
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      if (c) {
        c.active--;
        if (c.res === res) c.res = null;
        c.bytesAtIdle = req.socket.bytesRead;
        c.idleSince = Date.now();
      }
    };
    res.on('finish', end);
    res.on('close', end);
  });
  server.on('upgrade', (req, socket) => {
    conns.delete(socket);
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
  });

  const target = listenTarget(opts.name);
  if (target) server.listen(target);
  else server.listen(opts.port ?? 8080, opts.host);

  let drained = null;
  function drain() {
    if (drained) return drained;
    draining = true;
    const start = Date.now();
    const stats = { conns: conns.size + upgraded.size, idleClosed: 0, cut: 0, ms: 0 };
    // Stop accepting, without http.Server.close's closeIdleConnections —
    // after the event loop's next poll phase, which accepts what already
    // waits in the accept queue: closing the socket would reset those
    // connections, whose requests may be sent.
    setImmediate(() => net.Server.prototype.close.call(server));
    // Requests already being answered: Connection: close where the headers
    // are not out yet.
    for (const c of conns.values()) {
      if (c.res && !c.res.headersSent) c.res.shouldKeepAlive = false;
    }
    for (const socket of upgraded) {
      if (opts.onDrain) {
        try { opts.onDrain(socket); } catch (e) { console.error('handoff: onDrain:', e); }
      }
    }
    drained = new Promise((resolve) => {
      const tick = setInterval(() => {
        const now = Date.now();
        for (const [socket, c] of conns) {
          // (writableLength: a response still on its way out to a slow
          // client, which destroy() below would cut.)
          if (c.closing || c.active > 0 || socket.writableLength > 0) continue;
          if (socket.bytesRead !== c.bytesAtIdle) {
            // Bytes of a request not yet complete: wait for it.
            c.bytesAtIdle = socket.bytesRead;
            c.idleSince = now;
          } else if (now - Math.max(c.idleSince, start) >= idleGrace) {
            // Idle, nothing received since its last response, for the
            // grace: a client that waited that long is not sending.
            stats.idleClosed++;
            c.closing = true;
            // Closed at once, not with end(): libuv would shut the socket
            // down only at the event loop's next poll, and a request the
            // client sends meanwhile is lost (on a busy machine, for
            // milliseconds). destroy() closes it now, and the kernel sends
            // the FIN (a reset if a request came since the last read, which
            // end() would lose too). It leaves conns when it closes.
            socket.destroy();
          }
        }
        const left = conns.size + upgraded.size;
        if (left === 0 || now - start >= drainTimeout) {
          clearInterval(tick);
          for (const socket of [...conns.keys(), ...upgraded]) {
            stats.cut++;
            socket.destroy();
          }
          stats.ms = Date.now() - start;
          resolve(stats);
        }
      }, 50);
    });
    if (exit) {
      drained.then((s) => {
        console.log(`handoff: pid=${process.pid} drained ${s.conns} connections in ${s.ms} ms (${s.idleClosed} idle closed, ${s.cut} cut)`);
        process.exit(0);
      });
    }
    return drained;
  }

  for (const sig of opts.signals ?? ['SIGTERM', 'SIGINT']) process.once(sig, drain);
  return { drain };
}

module.exports = { serve, listenFds, listenTarget };
