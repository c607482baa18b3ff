"""docker cp: files between a container's root filesystem and the host.

Everything that touches the container's side runs in a forked child chrooted into its root (docker's
chrooted archiver): paths and symlinks there resolve inside the container, so a process in it that
swaps a directory for a link to /etc between our check and our copy reaches only its own files. The
two sides talk in tar over a pipe; device nodes from the container are not copied out.
``resolve_in`` resolves an image path without a chroot, for reading config files (passwd, group).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pallet.errors import InvalidArgument, NotFound

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


def _child(root: Path, work: Any) -> int:
    """Fork a child that chroots into ``root`` and runs ``work()``; returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = _FAILED
        try:
            os.chroot(root)
            os.chdir("/")
            code = work()
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def copy_out(root: Path, inner: str, local: Path, name: str) -> None:
    """container:inner → local (into it if it is a directory, else as that name)."""
    if not local.parent.is_dir():
        raise NotFound(f"destination directory {local.parent} does not exist")
    into = local.is_dir() and not local.is_symlink()
    r, w = os.pipe()

    def work() -> int:
        os.close(r)
        src = "/" + inner.strip("/")
        if not os.path.lexists(src) or (inner.endswith("/") and not os.path.isdir(src)):
            return _MISSING
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(src, arcname=os.path.basename(src) or ".", filter=_no_devices)
        return 0

    pid = _child(root, work)
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
        raise NotFound(f"Could not find the file {inner} in container {name}")
    if code != 0:
        raise InvalidArgument(f"copying {inner} out of container {name} failed")


def copy_in(root: Path, local: Path, inner: str, name: str) -> None:
    """local → container:inner (into it if it is a directory there, else as that name)."""
    if not local.exists() and not local.is_symlink():
        raise NotFound(f"could not find the file {local} in the local filesystem")
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

    pid = _child(root, work)
    os.close(r)
    try:
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(local, arcname=local.name)
    except BrokenPipeError:
        pass  # the child refused: its exit code says why
    code = _wait(pid)
    if code == _MISSING:
        raise NotFound(f"Could not find the file {inner} in container {name}")
    if code == _NO_PARENT:
        raise NotFound(f"Could not find the file {os.path.dirname(inner)} in container {name}")
    if code != 0:
        raise InvalidArgument(f"copying {local} into container {name} failed")


def copy(engine: Any, rec: Any, inner: str, local: str, to_container: bool) -> None:
    root, mounted = engine.rootfs(rec)
    try:
        if to_container:
            copy_in(root, Path(local), inner, rec.name)
        else:
            copy_out(root, inner, Path(local), rec.name)
    finally:
        if mounted:
            engine._unmount_rootfs(rec.id)
