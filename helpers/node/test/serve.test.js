'use strict';
// Tests of serve() with real processes, sockets and signals: each test runs
// a server in a child node, as a program runs it, and talks HTTP to it over
// raw TCP connections so that it sees each response and each close.
//
//   node --test        (in helpers/node; Node 18 or later, no dependencies)

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');

const HELPER = path.join(__dirname, '..');

// The program each test runs: GET / answers with the pid and whether
// LISTEN_FDS is still in the environment; GET /hold answers only once a line
// comes on stdin. It prints 'listening PORT', 'held' and 'term' as they
// happen.
const PROGRAM = `
const http = require('http');
const handoff = require(${JSON.stringify(HELPER)});
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.url === '/hold') {
      console.log('held');
      process.stdin.once('data', () => res.end('released\\n'));
      return;
    }
    res.end('pid=' + process.pid + ' listen_fds=' + (process.env.LISTEN_FDS ?? '-') + '\\n');
  });
});
server.on('listening', () => console.log('listening ' + server.address().port));
handoff.serve(server, { name: 'web', port: 0, host: '127.0.0.1', idleGrace: Number(process.env.IDLE_GRACE || 1000) });
process.on('SIGTERM', () => console.log('term'));
`;

const TIMEOUT = 10000; // ms any one wait may take

/** within rejects with what if promise has not settled in TIMEOUT ms. */
function within(promise, what) {
  let timer;
  const t = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT); });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/**
 * run starts the program (or argv) with env and the extra stdio entries,
 * and returns the child, line(re) — a promise of the first stdout line
 * matching re, seen or to come — and exited(), a promise of { code, signal,
 * out, err }.
 */
function run({ env = {}, argv = [process.execPath, '-e', PROGRAM], stdio = [] } = {}) {
  const clean = { ...process.env };
  for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'NOTIFY_SOCKET']) delete clean[k];
  const child = spawn(argv[0], argv.slice(1), { env: { ...clean, ...env }, stdio: ['pipe', 'pipe', 'pipe', ...stdio] });
  const lines = [];
  const waiters = [];
  let out = '';
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (s) => {
    out += s;
    partial += s;
    const parts = partial.split('\n');
    partial = parts.pop();
    for (const l of parts) {
      lines.push(l);
      for (const w of waiters) if (!w.done && w.re.test(l)) { w.done = true; w.resolve(l); }
    }
  });
  let err = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => { err += s; });
  // 'close': the child has exited and its stdout and stderr are read to the end.
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out, err })));
  function line(re) {
    const seen = lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return within(new Promise((resolve, reject) => {
      waiters.push({ re, resolve, done: false });
      exited.then((e) => reject(new Error(`exited (${e.code ?? e.signal}) before a line matching ${re}: ${e.out}${e.err}`)));
    }), `a line matching ${re}`);
  }
  return { child, line, exited: () => within(exited, 'the exit'), kill: () => child.kill('SIGKILL') };
}

/**
 * client opens a keep-alive connection to port and returns send(path),
 * which writes a GET and resolves with the response ({ status, headers,
 * body, at }), and closed(), which resolves with Date.now() when the server
 * has closed the connection (its FIN), or rejects on a reset.
 */
async function client(port) {
  const sock = net.connect(port, '127.0.0.1');
  await within(new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); }), 'a connection');
  let buf = Buffer.alloc(0);
  const pending = [];
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers = {};
      for (const h of head.slice(1)) {
        const i = h.indexOf(':');
        headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
      }
      const len = Number(headers['content-length'] ?? 0);
      if (buf.length < end + 4 + len) return;
      const body = buf.subarray(end + 4, end + 4 + len).toString();
      buf = buf.subarray(end + 4 + len);
      pending.shift().resolve({ status: Number(head[0].split(' ')[1]), headers, body, at: Date.now() });
    }
  });
  const closed = new Promise((resolve, reject) => {
    sock.on('end', () => resolve(Date.now()));
    sock.on('error', reject);
  });
  closed.catch(() => {}); // a test that looks at it sees the rejection
  function send(p) {
    return within(new Promise((resolve, reject) => {
      pending.push({ resolve });
      sock.write(`GET ${p} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n`);
      closed.then(() => reject(new Error(`closed before the response to ${p}`)), reject);
    }), `the response to ${p}`);
  }
  return { send, closed: () => within(closed, 'the close'), sock };
}

test('binds its own port when no socket was passed, and exits 0 on SIGTERM', async () => {
  const p = run();
  try {
    const port = Number((await p.line(/^listening /)).split(' ')[1]);
    assert.ok(port > 0);
    const c = await client(port);
    const r = await c.send('/');
    assert.equal(r.status, 200);
    assert.equal(r.body, `pid=${p.child.pid} listen_fds=-\n`);
    p.child.kill('SIGTERM');
    const e = await p.exited();
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /handoff: pid=\d+ drained 1 connections/);
  } finally {
    p.kill();
  }
});

/** passedSocket listens on 127.0.0.1:0 and returns the server and its fd. */
async function passedSocket() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const fd = srv._handle.fd; // Linux: the listening socket's descriptor
  assert.ok(fd > 2, 'the listening socket has a descriptor');
  return { srv, fd, port: srv.address().port };
}

// sh's exec keeps the shell's pid, so LISTEN_PID=$$ names the node that runs.
const viaShell = (listenPid) => ['/bin/sh', '-c', `LISTEN_PID=${listenPid} exec "$0" -e "$1"`, process.execPath, PROGRAM];

test('takes fd 3 when LISTEN_FDS and LISTEN_PID name this process', async () => {
  const { srv, fd, port } = await passedSocket();
  const p = run({ argv: viaShell('$$'), env: { LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' }, stdio: [fd] });
  srv.close(); // the child holds its copy; this process accepts nothing
  try {
    assert.equal(await p.line(/^listening /), `listening ${port}`);
    const c = await client(port);
    const r = await c.send('/');
    assert.equal(r.body, `pid=${p.child.pid} listen_fds=-\n`, 'served by the child, LISTEN_FDS taken out of its environment');
    p.child.kill('SIGTERM');
    const e = await p.exited();
    assert.equal(e.code, 0, e.err);
  } finally {
    p.kill();
  }
});

test('leaves a socket passed to another process (LISTEN_PID) and binds its own', async () => {
  const { srv, fd, port } = await passedSocket();
  const p = run({ argv: viaShell('1'), env: { LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' }, stdio: [fd] });
  srv.close();
  try {
    const own = Number((await p.line(/^listening /)).split(' ')[1]);
    assert.notEqual(own, port);
    const r = await (await client(own)).send('/');
    assert.equal(r.body, `pid=${p.child.pid} listen_fds=-\n`);
  } finally {
    p.kill();
  }
});

test('refuses to start when no passed socket has its name, saying what to give handoff', async () => {
  const { srv, fd } = await passedSocket();
  const p = run({ argv: viaShell('$$'), env: { LISTEN_FDS: '1', LISTEN_FDNAMES: 'admin' }, stdio: [fd] });
  srv.close();
  try {
    const e = await p.exited();
    assert.notEqual(e.code, 0);
    assert.match(e.err, /no socket named "web" was passed \(passed: admin\) — give --listen web=ADDR to handoff run/);
  } finally {
    p.kill();
  }
});

test('SIGTERM: a request in flight is answered, an idle keep-alive connection closed only after the grace, a request sent during the grace answered', async () => {
  const grace = 1000;
  const p = run({ env: { IDLE_GRACE: String(grace) } });
  try {
    const port = Number((await p.line(/^listening /)).split(' ')[1]);
    const idle = await client(port); // keep-alive, idle from its first response
    const idleAnswered = (await idle.send('/')).at;
    const during = await client(port); // keep-alive; its next request comes after SIGTERM
    await during.send('/');
    const inflight = await client(port);
    const held = inflight.send('/hold');
    await p.line(/^held$/);

    p.child.kill('SIGTERM');
    await p.line(/^term$/);
    const r = await during.send('/');
    assert.equal(r.status, 200, 'a request on an idle connection during the grace is answered');
    assert.equal(r.headers.connection, 'close');
    await during.closed();

    const closedAt = await idle.closed(); // a FIN, not a reset
    // The helper counts the grace from its end of the response, a little
    // before this side saw it: 200 ms of slack for a loaded machine; a drain
    // that closes idle connections at once does it within about 50 ms.
    assert.ok(closedAt - idleAnswered >= grace - 200, `idle connection closed ${closedAt - idleAnswered} ms after its last response, before the ${grace} ms grace`);

    p.child.stdin.write('go\n'); // the request in flight, answered after the idle close
    const h = await held;
    assert.equal(h.status, 200);
    assert.equal(h.body, 'released\n');
    assert.equal(h.headers.connection, 'close', 'a response begun in the drain says Connection: close');
    await inflight.closed();

    const e = await p.exited();
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /drained 3 connections in \d+ ms \(1 idle closed, 0 cut\)/);
  } finally {
    p.kill();
  }
});

test('the ESM entry exports the same functions', async () => {
  const p = run({ argv: [process.execPath, '--input-type=module', '-e',
    `import * as h from ${JSON.stringify(path.join(HELPER, 'index.mjs'))}; console.log([typeof h.serve, typeof h.listenFds, typeof h.listenTarget, typeof h.default.serve].join(' '))`] });
  const e = await p.exited();
  assert.equal(e.code, 0, e.err);
  assert.equal(e.out.trim(), 'function function function function');
});
