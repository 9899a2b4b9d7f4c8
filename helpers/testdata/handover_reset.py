"""The Python helper's new side when the old process (or handoff's relay)
closed the channel with an answer unread: the kernel reports a reset ahead of
the messages sent before it, and the commit among them must still be read.
Run by TestPythonHandoverAfterReset with the path of helpers/python; prints
"ok: ..." or fails."""
import os, queue, socket, struct, sys
sys.path.insert(0, sys.argv[1])
os.environ.pop("HANDOFF_HANDOVER_FDS", None)
from handoff._handover import Handover

# A Handover not run by handoff adopts nothing; its receiving loop is given
# the new end of a channel made here, read to its end in this thread.
h = Handover()
h._adopted = queue.Queue()
old, new = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
client, server = socket.socketpair()
new.send(b"P" + struct.pack("<Q", 1))  # an answer the old end never reads
old.sendmsg([b"I" + struct.pack("<QI", 7, 5) + b"state"],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", server.fileno()))])
old.send(b"C" + struct.pack("<Q", 7))
server.close()
old.close()  # with the answer unread: the new end reads a reset first
h._receive(new)
got = h._adopted.get(timeout=5)
assert got is not None, "the connection committed before the reset was not adopted"
conn, state, unread = got
client.sendall(b"ping")
assert conn.recv(4) == b"ping", "the adopted connection is not the one offered"
assert state == b"state" and unread == b"", (state, unread)
assert h._adopted.get(timeout=5) is None, "the loop did not end after the channel did"
print("ok: the commit behind the reset adopted its connection")
