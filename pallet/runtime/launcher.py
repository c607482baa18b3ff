"""Starting the container's init: a fresh interpreter from a copy of Python that nobody can write.

Why not just fork: the init ends up inside the container, where /proc/self/exe (or
/proc/PID/exe of the init) would point at the host's python binary; a container that opens it
for writing could replace it for every later Python on the host (CVE-2019-5736). So the init runs
from a sealed view of the interpreter, as runc 1.2 does: a private, read-only overlayfs over the
interpreter's directory, mounted nowhere (fsopen/fsmount: no copy, ~0.05 ms, and overlayfs without
an upper layer has no way to be made writable, unlike a read-only bind mount), or, where that is
refused (rootless, old kernels, no overlayfs), a sealed memfd copy (~3 ms for 6.5 MiB): it cannot
be written, shrunk or grown.

The init starts before the container's cgroups exist, so that its interpreter (~12 ms here) starts
while the runtime makes them: it joins them itself (init.py says how, without the lock that
cgroup.procs takes).
"""

from __future__ import annotations

import _socket
import fcntl
import os
import sys

import pallet
from pallet.linux import syscalls as s

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pallet.__file__)))


def sealed_interpreter(state_dir: str | None = None) -> int:
    """An fd of the running interpreter that execveat(2) can run and nobody can write through;
    ``state_dir`` (the runtime's --root) holds the empty directory the overlay needs."""
    if os.geteuid() == 0 and state_dir:
        try:
            return _overlay_view(os.path.join(state_dir, ".exe-lower"))
        except OSError:
            pass
    return _memfd_copy()


def _overlay_view(empty: str) -> int:
    """An O_PATH fd of the interpreter seen through a detached read-only overlayfs. overlayfs needs two
    lower layers to run without an upper one, and refuses one inside another (the same directory
    twice included): the second is ``empty``, below the interpreter's directory."""
    sysc = s.default()
    directory, name = os.path.split(os.path.realpath(sys.executable))
    os.makedirs(empty, 0o700, exist_ok=True)
    lowers = ":".join(d.replace("\\", "\\\\").replace(":", "\\:") for d in (directory, empty))
    ctx = sysc.fsopen("overlay")
    try:
        sysc.fsconfig_set_string(ctx, "lowerdir", lowers)
        try:
            sysc.fsconfig_set_string(ctx, "xino", "off")  # no inode-number remapping (and no dmesg about it)
        except OSError:
            pass
        sysc.fsconfig_create(ctx)
        mnt = sysc.fsmount(ctx, s.MOUNT_ATTR_RDONLY | s.MOUNT_ATTR_NOSUID | s.MOUNT_ATTR_NODEV)
    finally:
        os.close(ctx)
    try:
        return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=mnt)
    finally:
        os.close(mnt)  # the open file keeps the detached mount alive, and nothing else does


def _memfd_copy() -> int:
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


def spawn_init(keep_fds: list[int], state_dir: str | None = None) -> tuple[int, _socket.socket]:
    """Fork and exec pallet.runtime.init; returns (pid, our end of the sync socket)."""
    exe = sealed_interpreter(state_dir)
    parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    # the interpreter runs from a sealed view, so it cannot find its own library by its path: hand it ours
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
