"""Starting the container's init: a fresh interpreter from a sealed memfd copy of Python.

Why not just fork: the init ends up inside the container, where /proc/self/exe (or
/proc/PID/exe of the init) would point at the host's python binary; a container that opens it
for writing could replace it for every later Python on the host (CVE-2019-5736). A sealed memfd
cannot be written, shrunk or grown, so that path leads nowhere. runc does the same with its
own binary.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import sys

import pallet
from pallet.linux import syscalls as s

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pallet.__file__)))


def sealed_interpreter() -> int:
    """A CLOEXEC memfd holding a sealed copy of the running interpreter."""
    sysc = s.default()
    try:
        fd = sysc.memfd_create("pallet-init", s.MFD_CLOEXEC | s.MFD_ALLOW_SEALING | s.MFD_EXEC)
    except OSError:  # kernels before 6.3 don't know MFD_EXEC; memfds are executable there anyway
        fd = sysc.memfd_create("pallet-init", s.MFD_CLOEXEC | s.MFD_ALLOW_SEALING)
    src = os.open(os.path.realpath(sys.executable), os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        done = 0
        while done < size:
            n = os.sendfile(fd, src, done, size - done)
            if n == 0:
                break
            done += n
    finally:
        os.close(src)
    fcntl.fcntl(fd, s.F_ADD_SEALS, s.F_SEAL_SEAL | s.F_SEAL_SHRINK | s.F_SEAL_GROW | s.F_SEAL_WRITE)
    return fd


def spawn_init(keep_fds: list[int]) -> tuple[int, _socket.socket]:
    """Fork and exec pallet.runtime.init; returns (pid, our end of the sync socket)."""
    exe = sealed_interpreter()
    parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    # the interpreter runs from a memfd, so it cannot find its own library by its path: hand it ours
    path = os.pathsep.join([_PKG_PARENT] + [p for p in sys.path if p and os.path.isdir(p)])
    env = {"PYTHONPATH": path, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    argv = [
        sys.executable,
        "-S",
        "-s",
        "-B",
        "-c",
        "from pallet.runtime.init import main; main()",
        str(child.fileno()),
    ]
    pid = os.fork()
    if pid == 0:  # after fork, nothing clever: make the fds cross, then exec
        try:
            os.set_inheritable(child.fileno(), True)
            for fd in keep_fds:
                os.set_inheritable(fd, True)
            os.execve(exe, argv, env)
        finally:
            os._exit(127)
    os.close(exe)
    child.close()
    return pid, parent
