#!/usr/bin/env python3
"""A WSGI application under handoff, served by handoff.serve_wsgi: every
request is answered with the pid; /slow?d=2s waits that long first.

    handoff run --listen web=127.0.0.1:8080 -- python3 wsgi_app.py
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import handoff  # noqa: E402


def application(environ, start_response):
    environ["wsgi.input"].read()
    m = re.search(r"(?:^|&)d=(\d+(?:\.\d+)?)(ms|s)", environ.get("QUERY_STRING", ""))
    if m:
        time.sleep(min(float(m.group(1)) / (1000 if m.group(2) == "ms" else 1), 60))
    body = f"pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    st = handoff.serve_wsgi(application, name="web", address=("127.0.0.1", int(os.environ.get("PORT", "8080"))))
    print(f"app: pid={os.getpid()} drained in {st['ms']} ms ({st['cut']} cut)", flush=True)
