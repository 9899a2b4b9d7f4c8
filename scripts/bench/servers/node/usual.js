// The benchmark's Node.js server with the drain Node's and PM2's docs teach:
// on SIGINT or SIGTERM, server.close(), then exit once it has closed. It
// serves the socket handoff or systemd passes (fd 3, LISTEN_FDS), else binds
// $PORT (PM2's cluster mode shares it among the instances), and tells PM2 it
// is ready (wait_ready). Every request is answered with the pid;
// /slow?d=500ms waits that long first.
const http = require('http');

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const d = /[?&]d=(\d+(?:\.\d+)?)(ms|s)/.exec(req.url);
    const wait = d ? parseFloat(d[1]) * (d[2] === 's' ? 1000 : 1) : 0;
    setTimeout(() => res.end(`pid=${process.pid}\n`), Math.min(wait, 60000));
  });
});
const passed = process.env.LISTEN_PID === String(process.pid) && Number(process.env.LISTEN_FDS) > 0;
server.listen(passed ? { fd: 3 } : { port: Number(process.env.PORT) || 8080, host: '127.0.0.1' }, () => {
  if (process.send) process.send('ready');
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
