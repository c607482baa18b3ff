"""docker cp: files between a container's root filesystem and the host. Paths inside the container
are resolved in its root, symlinks included, so that no link in the image can point the copy at the
host (the same rule as the runtime's mount destinations)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pallet.errors import InvalidArgument, NotFound


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
        if candidate.is_symlink() and (parts or True):
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


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        if dst.is_dir():
            dst = dst / src.name
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        if dst.is_dir():
            dst = dst / src.name
        shutil.copy2(src, dst, follow_symlinks=False)


def copy(engine: Any, rec: Any, inner: str, local: str, to_container: bool) -> None:
    root, mounted = engine.rootfs(rec)
    try:
        target = resolve_in(root, inner)
        if to_container:
            src = Path(local)
            if not src.exists() and not src.is_symlink():
                raise NotFound(f"could not find the file {local} in the local filesystem")
            if inner.endswith("/") and not target.is_dir():
                raise NotFound(f"Could not find the file {inner} in container {rec.name}")
            if not target.parent.is_dir():
                raise NotFound(f"Could not find the file {os.path.dirname(inner)} in container {rec.name}")
            _copy(src, target)
        else:
            if not target.exists() and not target.is_symlink():
                raise NotFound(f"Could not find the file {inner} in container {rec.name}")
            dst = Path(local)
            if not dst.parent.is_dir():
                raise NotFound(f"destination directory {dst.parent} does not exist")
            _copy(target, dst)
    finally:
        if mounted:
            engine._unmount_rootfs(rec.id)
