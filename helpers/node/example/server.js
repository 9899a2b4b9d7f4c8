// A Node.js server under handoff: every request is answered with the pid;
// /slow?d=2s waits that long first. It drains without loss on SIGTERM.
//
//   handoff run --ready accept --listen web=127.0.0.1:8080 -- node server.js
const http = require('http');
const handoff = require('..');

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const d = /[?&]d=(\d+(?:\.\d+)?)(ms|s)/.exec(req.url);
    const wait = d ? parseFloat(d[1]) * (d[2] === 's' ? 1000 : 1) : 0;
    setTimeout(() => res.end(`pid=${process.pid}\n`), Math.min(wait, 60000));
  });
});
handoff.serve(server, { name: 'web', port: Number(process.env.PORT) || 8080, host: '127.0.0.1' });
console.log(`app: pid=${process.pid} serving`);
