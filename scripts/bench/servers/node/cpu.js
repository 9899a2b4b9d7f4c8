// The benchmark's CPU-bound Node.js server for the workers section: each
// request costs a fixed amount of work on the event loop (PBKDF2, about
// 4 ms on the machine measured), so that one process saturates one core.
// It drains with handoff's helper (helpers/node) under handoff run and
// under PM2 alike — the helper binds $PORT when no socket is passed, which
// PM2's cluster mode shares — and tells PM2 it is ready (wait_ready).
// /slow?d=500ms waits that long, without work.
const crypto = require('crypto');
const http = require('http');
const path = require('path');
const handoff = require(path.join(__dirname, '../../../../helpers/node'));

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const d = /[?&]d=(\d+(?:\.\d+)?)(ms|s)/.exec(req.url);
    if (d) {
      const wait = parseFloat(d[1]) * (d[2] === 's' ? 1000 : 1);
      setTimeout(() => res.end(`pid=${process.pid}\n`), Math.min(wait, 60000));
      return;
    }
    crypto.pbkdf2Sync('password', 'salt', 20000, 32, 'sha256');
    res.end(`pid=${process.pid}\n`);
  });
});
server.on('listening', () => { if (process.send) process.send('ready'); });
handoff.serve(server, { port: Number(process.env.PORT) || 8080, host: '127.0.0.1' });
