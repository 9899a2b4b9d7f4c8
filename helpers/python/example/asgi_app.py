#!/usr/bin/env python3
"""An ASGI application under handoff, served by handoff.run_asgi (asyncio,
standard library only): every request is answered with the pid; /slow?d=2s
waits that long first. The same app runs under uvicorn (uvicorn
asgi_app:app); see the README for why handoff's drain is the one to use.

    handoff run --listen web=127.0.0.1:8080 -- python3 asgi_app.py
"""
import asyncio
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import handoff  # noqa: E402


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan events to handle here
    while (await receive()).get("more_body"):
        pass
    m = re.search(r"(?:^|&)d=(\d+(?:\.\d+)?)(ms|s)", scope["query_string"].decode())
    if m:
        await asyncio.sleep(min(float(m.group(1)) / (1000 if m.group(2) == "ms" else 1), 60))
    body = f"pid={os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    st = handoff.run_asgi(app, name="web", address=("127.0.0.1", int(os.environ.get("PORT", "8080"))))
    print(f"app: pid={os.getpid()} drained in {st['ms']} ms ({st['cut']} cut)", flush=True)
