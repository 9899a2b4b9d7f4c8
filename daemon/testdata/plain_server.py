#!/usr/bin/env python3
"""A plain server that takes its socket from fd 3 and never sends READY=1,
as most programs outside systemd's world do. With DELAY set, it waits that
many seconds before it serves (a slow start: loading code, warming a cache).
With LINGER set, it holds its socket that many seconds after it stops
accepting on SIGTERM, before it exits (as a program that tidies up does).
With BALLOON_FILE set, worker 1 (HANDOFF_WORKER) that finds no such file
creates it and holds 64 MiB more, once: a worker that grows past
--max-memory. Answers every request with its pid; on SIGTERM finishes and
exits 0."""
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = ("pid=%d\n" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


time.sleep(float(os.environ.get("DELAY", "0")))
balloon = b""
if os.environ.get("BALLOON_FILE") and os.environ.get("HANDOFF_WORKER") == "1":
    try:
        os.close(os.open(os.environ["BALLOON_FILE"], os.O_CREAT | os.O_EXCL))
        balloon = b"x" * (64 << 20)  # written, so resident
    except FileExistsError:
        pass
srv = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
srv.serve_forever()  # waits in poll(2) on fd 3
time.sleep(float(os.environ.get("LINGER", "0")))
