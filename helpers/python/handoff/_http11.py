"""The HTTP/1.1 that serve_asgi speaks: a request parsed from the bytes
received so far (Content-Length or chunked bodies, read whole), and status
lines. No I/O: the connection (see _asgi) reads, writes and decides."""
from __future__ import annotations

from http import HTTPStatus
from typing import List, NamedTuple, Optional, Tuple

MAX_HEAD = 65536  # bytes a request line and headers may take


class _HTTPError(Exception):
    """A request that cannot be parsed: answered 400, the connection closed."""


class Request(NamedTuple):
    method: str
    target: str
    version: str  # "HTTP/1.1"
    headers: List[Tuple[bytes, bytes]]  # names in lower case, in order
    body: bytes
    keep_alive: bool  # the client will send another request on the connection


def parse_request(buf: bytearray) -> Tuple[Optional[Request], bool]:
    """Parse the first request in buf. Returns (request, False) and removes
    its bytes from buf when buf holds the whole of it; (None, expect) when
    more must be received first — expect is True when the head is complete,
    no byte of the body has come, and the client asked for 100 Continue.
    Raises _HTTPError for a request that cannot be parsed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise _HTTPError("request head over 64 KiB")
        return None, False
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _HTTPError("malformed request line")
    headers: List[Tuple[bytes, bytes]] = []
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if not sep:
            raise _HTTPError("malformed header line")
        headers.append((k.strip().lower().encode("latin-1"), v.strip().encode("latin-1")))
    hd = dict(headers)
    pos = end + 4
    body = bytearray()
    if b"chunked" in hd.get(b"transfer-encoding", b"").lower():
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None, False
            try:
                size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
            except ValueError:
                raise _HTTPError("malformed chunk size")
            if size == 0:
                trailer = buf.find(b"\r\n\r\n", nl)
                if trailer < 0:
                    return None, False
                pos = trailer + 4
                break
            if len(buf) < nl + 2 + size + 2:
                return None, False
            body += buf[nl + 2:nl + 2 + size]
            pos = nl + 2 + size + 2
    else:
        try:
            length = int(hd.get(b"content-length", b"0"))
        except ValueError:
            raise _HTTPError("malformed Content-Length")
        if len(buf) < pos + length:
            return None, hd.get(b"expect", b"").lower() == b"100-continue" and len(buf) == pos
        body += buf[pos:pos + length]
        pos += length
    del buf[:pos]
    conn = hd.get(b"connection", b"").lower()
    keep = b"close" not in conn if version == "HTTP/1.1" else b"keep-alive" in conn
    return Request(method, target, version, headers, bytes(body), keep), False


def _reason(status: int) -> bytes:
    """The reason phrase of status, or b"" for a code HTTPStatus lacks."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
