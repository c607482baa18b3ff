"""Network namespaces as files, as ``ip netns add`` makes them: a child unshares CLONE_NEWNET, brings
``lo`` up and bind-mounts its /proc/self/ns/net onto a file, so the namespace lives without a process.
The child is forked: a thread would move the whole process's view of the network (setns is per task
but CPython's other threads and the fds they open would see it).
"""

from __future__ import annotations

import os

from pallet.linux import net, syscalls


def create(path: str) -> None:
    """A new network namespace pinned at ``path`` (a regular file made here), with lo up."""
    sc = syscalls.default()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            sc.unshare(syscalls.CLONE_NEWNET)
            net.bring_up("lo")
            sc.mount("/proc/self/ns/net", path, None, syscalls.MS_BIND)
            code = 0
        except OSError as e:
            os.write(w, str(e).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        os.unlink(path)
        raise OSError(f"cannot create network namespace {path}: {err or 'child failed'}")


def delete(path: str) -> None:
    """Unmount and remove a namespace file; idempotent (an unmounted or absent file is fine)."""
    sc = syscalls.default()
    try:
        sc.umount2(path, syscalls.MNT_DETACH)
    except OSError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)
