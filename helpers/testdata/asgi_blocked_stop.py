#!/usr/bin/env python3
"""For helpers_test: an ASGI application served by the helper's run_asgi
on 127.0.0.1:$PORT, whose event loop blocks when told, so that a test can
order what the loop sees. Once serving it blocks for $BLOCK_S seconds after
printing "blocked"; SIGUSR1 makes it block as long again after printing
"blocked again". A SIGUSR1 and a SIGTERM sent during the first block are
seen together: the second block runs before the stop, and a connection made
during it waits in the accept queue until the drain takes it. Each request
is answered 0.3 s after it came."""
import asyncio
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import handoff  # noqa: E402

BLOCK_S = float(os.environ.get("BLOCK_S", "1"))


def block(what):
    print(what, flush=True)
    time.sleep(BLOCK_S)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGUSR1, block, "blocked again")
                loop.call_later(0.2, block, "blocked")
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(0.3)  # a request that takes a while: the drain must wait for it
    body = f"pid={os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    st = handoff.run_asgi(app, address=("127.0.0.1", int(os.environ["PORT"])))
    print(f"drained in {st['ms']} ms ({st['cut']} cut)", flush=True)
