"""Messages between the runtime (parent) and the container's init over a SOCK_SEQPACKET socketpair.

One marshalled dict a datagram, file descriptors attached with SCM_RIGHTS. The ladder for `create`:

    parent                                   init stage 1 (fresh interpreter, sealed memfd)
      cgroup apply(stage-1 pid)
      -> {"type": "bootstrap", ...}
                                             setns(user by path) or unshare(CLONE_NEWUSER)
                                          <- {"type": "userns"}           (only for a new user ns)
      write uid_map / gid_map
      -> {"type": "userns-mapped"}
                                             setns(the others by path), unshare(the new ones)
                                             fork -> stage 2 (PID 1 of the new pid ns)
                                          <- {"type": "pid", "pid": N}     (stage 1 exits)
                                             stage 2: mounts, devices
                                          <- {"type": "hooks"}
      prestart + createRuntime hooks
      -> {"type": "hooks-done", "state": {...}}
                                             createContainer hooks, pivot_root, masked/ro paths,
                                             hostname, sysctl, console (master fd attached):
                                          <- {"type": "console"} + fd     (only with a terminal)
                                          <- {"type": "ready"}
                                             blocks opening exec.fifo until `start`, then execs
Any failure in the init comes back as {"type": "error", "message": ..., "errno": N} and ends it.
"""

from __future__ import annotations

import _socket
import marshal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_MSG = 1 << 20

# marshal, not json: both ends are the same interpreter binary, the only writer is our own code
# (the socket is closed before the container's program runs), and it costs the init no imports.


def send(sock: _socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = marshal.dumps(msg)
    if fds:
        # fds as C ints in native order, as array("i") would give them (array imports collections: ~1 ms
        # of the init's start)
        raw = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, raw)])
    else:
        sock.sendall(data)


def recv(sock: _socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and any fds it carried; (None, []) when the peer closed."""
    fds: list[int] = []
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MSG, _socket.CMSG_SPACE(16 * 4))
    for level, typ, cdata in ancdata:
        if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(cdata[i : i + 4], sys.byteorder) for i in range(0, len(cdata) - 3, 4)]
    if not data:
        return None, fds
    msg: dict[str, Any] = marshal.loads(data)
    return msg, fds
