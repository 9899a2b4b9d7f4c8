// An Express app under handoff: the same answers as server.js, through
// Express's router. It drains without loss on SIGTERM.
//
//   npm install express
//   handoff run --ready accept --listen web=127.0.0.1:8080 -- node express.js
const http = require('http');
const express = require('express');
const handoff = require('..');

const app = express();
app.post('/', (req, res) => {
  req.resume();
  req.on('end', () => res.send(`pid=${process.pid}\n`));
});
app.post('/slow', (req, res) => {
  req.resume();
  const d = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(req.query.d || '');
  const wait = d ? parseFloat(d[1]) * (d[2] === 's' ? 1000 : 1) : 0;
  req.on('end', () => setTimeout(() => res.send(`pid=${process.pid}\n`), Math.min(wait, 60000)));
});
const server = http.createServer(app);
handoff.serve(server, { name: 'web', port: Number(process.env.PORT) || 8080, host: '127.0.0.1' });
console.log(`app: pid=${process.pid} serving (express)`);
