// The benchmark's Node.js server with handoff's drain helper
// (helpers/node): the same handler as usual.js.
const http = require('http');
const path = require('path');
const handoff = require(path.join(__dirname, '../../../../helpers/node'));

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const d = /[?&]d=(\d+(?:\.\d+)?)(ms|s)/.exec(req.url);
    const wait = d ? parseFloat(d[1]) * (d[2] === 's' ? 1000 : 1) : 0;
    setTimeout(() => res.end(`pid=${process.pid}\n`), Math.min(wait, 60000));
  });
});
handoff.serve(server, { port: Number(process.env.PORT) || 8080, host: '127.0.0.1' });
