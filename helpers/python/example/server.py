#!/usr/bin/env python3
"""A Python server under handoff, keep-alive on: every request is answered
with the pid; /slow?d=2s waits that long first. It drains without loss on
SIGTERM.

    handoff run --listen web=127.0.0.1:8080 -- python3 server.py
"""
import faulthandler
import os
import re
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import handoff  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        m = re.search(r"[?&]d=(\d+(?:\.\d+)?)(ms|s)", self.path)
        if m:
            time.sleep(min(float(m.group(1)) / (1000 if m.group(2) == "ms" else 1), 60))
        body = f"pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # the threads' stacks on SIGUSR1
    st = handoff.serve_http(Handler, name="web", address=("127.0.0.1", int(os.environ.get("PORT", "8080"))))
    print(f"app: pid={os.getpid()} drained in {st['ms']} ms ({st['cut']} cut)", flush=True)
