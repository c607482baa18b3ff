"""Messages between the runtime (parent) and the container's init over a SOCK_SEQPACKET socketpair.

One JSON object a datagram, file descriptors attached with SCM_RIGHTS. The ladder for `create`:

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

import array
import json
import socket
from typing import Any

MAX_MSG = 1 << 20


def send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and any fds it carried; (None, []) when the peer closed."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MSG, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, typ, cdata in ancdata:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)
