"""The Python helper's handover protocol, in one process and without handoff:
the old process's OUT channel joined straight to the new one's IN (a relay with
nothing in between). Run by TestPythonHandoverProtocol with the path of
helpers/python; prints "ok: ..." or fails an assertion."""
import os, socket, sys, threading
sys.path.insert(0, sys.argv[1])
import handoff

def pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

def handover(in_sock, out_sock, **kw):
    os.environ["HANDOFF_HANDOVER_FDS"] = "%d,%d" % (os.dup(in_sock.fileno()), os.dup(out_sock.fileno()))
    return handoff.Handover(**kw)

def tcp_pairs(n):
    ln = socket.create_server(("127.0.0.1", 0))
    out = []
    for _ in range(n):
        c = socket.create_connection(ln.getsockname())
        s, _ = ln.accept()
        out.append((c, s))
    ln.close()
    return out

# The old process's OUT and the new one's IN joined directly: handoff's
# relay with nothing in between.
new_in, old_out = pair()
old_in, _h1 = pair()
new_out, _h2 = pair()
old = handover(old_in, old_out)
assert not old.handed_over(), "handed over before any successor said hello"

def check(state):
    if state == b"no":
        raise ValueError("not this one")
new = handover(new_in, new_out, check=check)
assert old.handed_over(), "the successor's hello not seen"

(c1, s1), (c2, s2), (c3, s3) = tcp_pairs(3)
got = []
done = threading.Event()
def adopt():
    for a in new.adopted():
        got.append(a)
        if len(got) == 2:
            done.set()
threading.Thread(target=adopt, daemon=True).start()
res = old.offer_many([(s1, b"1", b"unread1"), (s2, b"no", b""), (s3, b"3", b"")])
assert res == [True, False, True], res
assert done.wait(5), "adoptions did not arrive"
assert [(a[1], a[2]) for a in got] == [(b"1", b"unread1"), (b"3", b"")], got
c1.sendall(b"ping")
assert got[0][0].recv(4) == b"ping"
got[0][0].sendall(b"pong")
assert c1.recv(4) == b"pong"
s2.sendall(b"kept")  # refused: still the old one's
assert c2.recv(4) == b"kept"
assert s1.fileno() == -1, "a moved socket left open in the old process"

# The new process dies after the item arrived, before answering: an abort.
o_out, peer = pair()
o_in, _h3 = pair()
old2 = handover(o_in, o_out, timeout=2.0)
peer.sendall(b"H\x01")
assert old2.handed_over()
(c4, s4), = tcp_pairs(1)
t = threading.Thread(target=lambda: (socket.recv_fds(peer, 1 << 17, 4), peer.close()))
t.start()
assert old2.offer_many([(s4, b"", b"")]) == [False]
t.join()
s4.sendall(b"mine")
assert c4.recv(4) == b"mine"
assert old2.offer(s4) is False, "offered after the channel broke"
print("ok: 2 moved, 1 refused by check and kept, 1 kept through an abort")
