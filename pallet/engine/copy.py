"""docker cp: files between a container's filesystem and the host.

Everything that touches the container's side runs in a forked child chrooted into its root (docker's
chrooted archiver): paths and symlinks there resolve inside the container, so a process in it that
swaps a directory for a link to /etc between our check and our copy reaches only its own files. The
two sides talk in tar over a pipe; device nodes from the container are not copied out.

Which root (``Where``, ``enter``): a running or paused container's own, in its mount namespace, so
that its volumes, bind mounts and tmpfs mounts are seen as its processes see them (nsenter's
``--mount --root``); a stopped container's snapshot with its volumes and binds mounted in a mount
namespace of the child's own, gone with it (docker mounts them for cp too).
``resolve_in`` resolves an image path without a chroot, for reading config files (passwd, group).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound
from pallet.linux import syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

TYPE_CHECKING = False  # tarfile is for cp only: `run` loads this module for resolve_in
if TYPE_CHECKING:
    import tarfile

_MISSING, _NO_PARENT, _FAILED = 2, 3, 4


def resolve_in(root: Path, path: str) -> Path:
    """``path`` inside ``root``, following symlinks as if ``root`` were ``/``; never leaves it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cur: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if cur:
                cur.pop()
            continue
        candidate = root.joinpath(*cur, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise InvalidArgument(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                cur = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        cur.append(part)
    return root.joinpath(*cur)


def _no_devices(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.ischr() or info.isblk() or info.isfifo() else info


def _rename(tar: tarfile.TarFile, old: str, new: str) -> Iterator[tarfile.TarInfo]:
    """The members with their first path component ``old`` renamed ``new`` (cp to a new name), one at
    a time: a streamed tar is extracted member by member, never read ahead."""
    for m in tar:
        for attr in ("name", "linkname") if m.islnk() else ("name",):
            value = getattr(m, attr)
            if value == old or value.startswith(old + "/"):
                setattr(m, attr, new + value[len(old) :])
        yield m


class Where:
    """The container side of a copy: ``pid``, a running container's init, or ``root``, a stopped
    one's mounted snapshot with ``binds``: (source, target in ``root`` already resolved, read-only).
    A plain class (``vars()`` is its JSON for pallet.api.archive): dataclasses imports inspect, ~5 ms."""

    def __init__(
        self, name: str, pid: int = 0, root: str = "", binds: list[tuple[str, str, bool]] | None = None
    ) -> None:
        self.name = name
        self.pid = pid
        self.root = root
        self.binds = binds or []


def where(engine: Any, rec: Any) -> tuple[Where, bool]:
    """Where to copy for ``rec``, and whether its snapshot was mounted for it (the caller unmounts:
    ``engine._unmount_rootfs``)."""
    if engine.status(rec) in ("running", "paused") and rec.state.get("Pid"):
        return Where(rec.name, pid=int(rec.state["Pid"])), False
    root, mounted = engine.rootfs(rec)
    binds = []
    # parents before children, so a bind inside another lands on top of it
    for m in sorted(rec.config.get("Mounts") or [], key=lambda m: m["Destination"].count("/")):
        source = str(m.get("Source") or "")
        if not source or not os.path.exists(source):
            continue
        target = resolve_in(root, m["Destination"])
        if not os.path.lexists(target):  # never started: its runtime made no mountpoint yet
            if os.path.isdir(source):
                target.mkdir(parents=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        binds.append((source, str(target), not m.get("RW", True)))
    return Where(rec.name, root=str(root), binds=binds), mounted


def open_container(w: Where) -> tuple[int, int]:
    """(its mount namespace, its root) of a running container's init, opened before any fork. A
    pidfd taken first pins the process: alive after the opens, they are its own and not those of a
    process that reused the pid. The host's own namespace is refused: a cp never writes to the host."""
    sc = syscalls.default()
    try:
        pidfd = sc.pidfd_open(w.pid)
    except OSError:
        raise FailedPrecondition(f"container {w.name}: cannot copy: its process is gone") from None
    fds: list[int] = []
    try:
        fds.append(os.open(f"/proc/{w.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
        fds.append(os.open(f"/proc/{w.pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        sc.pidfd_send_signal(pidfd, 0)
        if os.fstat(fds[0]).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            raise FailedPrecondition(f"container {w.name}: cannot copy: it shares the host's mounts")
    except OSError:
        for fd in fds:
            os.close(fd)
        raise FailedPrecondition(f"container {w.name}: cannot copy: its process is gone") from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        os.close(pidfd)
    return fds[0], fds[1]


def enter(w: Where, fds: tuple[int, int] | None) -> None:
    """Make the container's side this process's root (in a forked child, or a process of its own:
    a chroot and a namespace are process-wide). ``fds``: ``open_container``'s, for a running one."""
    sc = syscalls.default()
    if fds is not None:
        # setns(CLONE_NEWNS) resets root and cwd to the namespace's root mount; the init's own root
        # (/proc/PID/root, as nsenter --root) is the right one even for a runtime that chroots
        sc.setns(fds[0], syscalls.CLONE_NEWNS)
        os.fchdir(fds[1])
        os.chroot(".")
    else:
        sc.unshare(syscalls.CLONE_NEWNS)
        # private first, or the binds would propagate back to the host's namespace (mount_namespaces(7))
        sc.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        for source, target, ro in w.binds:
            sc.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
            if ro:
                flags = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY
                sc.mount(None, target, None, flags)
        os.chroot(w.root)
    os.chdir("/")


def _child(w: Where, work: Any) -> int:
    """Fork a child that enters the container's side (``enter``) and runs ``work()``; returns its pid."""
    fds = open_container(w) if w.pid else None
    pid = os.fork()
    if pid == 0:
        code = _FAILED
        try:
            enter(w, fds)
            code = work()
        finally:
            os._exit(code)
    if fds is not None:
        os.close(fds[0])
        os.close(fds[1])
    return pid


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def copy_out(side: Where, inner: str, local: Path) -> None:
    """container:inner → local (into it if it is a directory, else as that name)."""
    if not local.parent.is_dir():
        raise NotFound(f"destination directory {local.parent} does not exist")
    into = local.is_dir() and not local.is_symlink()
    import tarfile  # before the fork: in the child, nothing clever

    r, w = os.pipe()

    def work() -> int:
        os.close(r)
        src = "/" + inner.strip("/")
        if not os.path.lexists(src) or (inner.endswith("/") and not os.path.isdir(src)):
            return _MISSING
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(src, arcname=os.path.basename(src) or ".", filter=_no_devices)
        return 0

    pid = _child(side, work)
    os.close(w)
    base = os.path.basename("/" + inner.strip("/")) or "."
    try:
        with os.fdopen(r, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            members = tar if into else _rename(tar, base, local.name)
            target = local if into else local.parent
            for m in members:
                tar.extract(m, target, set_attrs=True)
    except tarfile.ReadError:
        pass  # nothing came: the child says why
    code = _wait(pid)
    if code == _MISSING:
        raise NotFound(f"Could not find the file {inner} in container {side.name}")
    if code != 0:
        raise InvalidArgument(f"copying {inner} out of container {side.name} failed")


def copy_in(side: Where, local: Path, inner: str) -> None:
    """local → container:inner (into it if it is a directory there, else as that name)."""
    if not local.exists() and not local.is_symlink():
        raise NotFound(f"could not find the file {local} in the local filesystem")
    import tarfile  # before the fork: in the child, nothing clever

    r, w = os.pipe()

    def work() -> int:
        os.close(w)
        dest = "/" + inner.strip("/")
        into = os.path.isdir(dest)
        if inner.endswith("/") and not into:
            return _MISSING
        if not into and not os.path.isdir(os.path.dirname(dest)):
            return _NO_PARENT
        with os.fdopen(r, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            members = tar if into else _rename(tar, local.name, os.path.basename(dest))
            for m in members:
                tar.extract(m, dest if into else os.path.dirname(dest), set_attrs=True)
        return 0

    pid = _child(side, work)
    os.close(r)
    try:
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(local, arcname=local.name)
    except BrokenPipeError:
        pass  # the child refused: its exit code says why
    code = _wait(pid)
    if code == _MISSING:
        raise NotFound(f"Could not find the file {inner} in container {side.name}")
    if code == _NO_PARENT:
        raise NotFound(f"Could not find the file {os.path.dirname(inner)} in container {side.name}")
    if code != 0:
        raise InvalidArgument(f"copying {local} into container {side.name} failed")


def copy(engine: Any, rec: Any, inner: str, local: str, to_container: bool) -> None:
    side, mounted = where(engine, rec)
    try:
        if to_container:
            copy_in(side, Path(local), inner)
        else:
            copy_out(side, inner, Path(local))
    finally:
        if mounted:
            engine._unmount_rootfs(rec.id)
