"""The look and the FIN that close an idle connection (handoff._quiet), on
real TCP connections, through ctypes and through the socket methods. Run by
TestPythonShutIfQuiet with the path of helpers/python; prints "ok: ..." or
fails an assertion."""
import socket, struct, sys
sys.path.insert(0, sys.argv[1])
from handoff import _quiet

def tcp_pair():
    ln = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(ln.getsockname())
    s, _ = ln.accept()
    ln.close()
    return c, s

def check(label):
    # Nothing waits: the FIN goes out, the client reads the end of stream,
    # and the server's socket is still open (the caller closes it).
    c, s = tcp_pair()
    assert _quiet.shut_if_quiet(s.fileno()) is True, label + ": quiet connection not shut"
    c.settimeout(5)
    assert c.recv(1) == b"", label + ": no FIN after the shut"
    c.sendall(b"late")  # the read side is open: nothing resets yet
    assert s.recv(4) == b"late", label + ": the read side was shut too"
    c.close(); s.close()

    # A request waits: nothing is done, and it is still there to be read,
    # on a blocking socket (the mode is left as it was).
    c, s = tcp_pair()
    c.sendall(b"POST / HTTP/1.1\r\n")
    s.settimeout(5)
    assert _quiet.shut_if_quiet(s.fileno()) is False, label + ": shut with a request waiting"
    assert s.recv(4) == b"POST", label + ": the waiting bytes were consumed"
    s.sendall(b"HTTP/1.1 200 OK\r\n")
    c.settimeout(5)
    assert c.recv(4) == b"HTTP", label + ": the connection was shut"
    assert s.gettimeout() == 5
    c.close(); s.close()

    # The client reset it: broken, nothing to lose.
    c, s = tcp_pair()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    s.settimeout(5)
    try:
        s.recv(1, socket.MSG_PEEK)  # wait until the reset is in
    except ConnectionResetError:
        pass
    assert _quiet.shut_if_quiet(s.fileno()) is None, label + ": a reset connection not reported broken"
    s.close()
    assert _quiet.shut_if_quiet(-1) is None

have_c = _quiet._C is not None
check("ctypes" if have_c else "socket methods")
if have_c:
    _quiet._C = None
    check("socket methods")
print("ok: shut when quiet, left alone with a request waiting, broken when reset; through %s" %
      ("ctypes and the socket methods" if have_c else "the socket methods only"))
