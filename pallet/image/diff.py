"""Changes between two filesystem trees, and the layer tar that records them.

Two ways to find changes, chosen from the snapshot's mounts (so nothing needs mounting):
an overlay upper directory already holds exactly the changes (whiteouts as 0/0 char devices or
``.wh.`` files, opaque directories by xattr), and two plain directories are compared entry by entry
(the native snapshotter). Both give docker's ``A``/``C``/``D`` list; ``write_tar`` turns it into an
OCI layer with whiteouts and the parent directories of every change.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pallet.image.whiteouts import OPAQUE, WHITEOUT_PREFIX

OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")


@dataclass(frozen=True)
class Change:
    kind: str  # "A" added, "C" changed, "D" deleted (docker diff's letters)
    path: str  # relative to the root, "/"-separated
    source: Path | None = None  # where the new content is; None for deletions
    opaque: bool = False  # a directory whose lower contents are all hidden


def walk(root: Path, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under root, depth first, parents before children, sorted."""
    for name in sorted(os.listdir(root / rel)):
        child = f"{rel}/{name}" if rel else name
        st = os.lstat(root / child)
        yield child, st
        if stat.S_ISDIR(st.st_mode):
            yield from walk(root, child)


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(OVERLAY_XATTRS) or name.startswith("user.fuseoverlayfs."):
            continue
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def _is_opaque(path: Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _in_lowers(rel: str, lowers: list[Path]) -> bool:
    return any(os.path.lexists(lower / rel) for lower in lowers)


def overlay_changes(upper: Path, lowers: list[Path]) -> list[Change]:
    """Changes recorded in an overlay upper directory; ``lowers`` only tell added from changed."""
    out: list[Change] = []
    for rel, st in walk(upper):
        name = rel.rsplit("/", 1)[-1]
        parent = rel.rpartition("/")[0]
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            out.append(Change("D", rel))
        elif name == OPAQUE:
            continue  # fuse-overlayfs' file form; the directory itself is reported opaque below
        elif name.startswith(WHITEOUT_PREFIX):
            out.append(Change("D", f"{parent}/{name[len(WHITEOUT_PREFIX) :]}".lstrip("/")))
        else:
            opaque = stat.S_ISDIR(st.st_mode) and (
                _is_opaque(upper / rel) or os.path.lexists(upper / rel / OPAQUE)
            )
            kind = "C" if _in_lowers(rel, lowers) else "A"
            out.append(Change(kind, rel, upper / rel, opaque))
    return out


def _same(a: Path, sa: os.stat_result, b: Path, sb: os.stat_result) -> bool:
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    if stat.S_ISREG(sa.st_mode) and sa.st_size != sb.st_size:
        return False
    # copies keep mtimes (cp -a), so a new mtime means a write; for a directory, a changed entry list
    if sa.st_mtime_ns != sb.st_mtime_ns:
        return False
    return _xattrs(a) == _xattrs(b)


def dir_changes(old: Path | None, new: Path) -> list[Change]:
    """Changes that turn ``old`` (None: empty) into ``new``; a deleted directory is one ``D``."""
    out: list[Change] = []
    seen: set[str] = set()
    for rel, st in walk(new):
        seen.add(rel)
        if old is None:
            out.append(Change("A", rel, new / rel))
            continue
        try:
            ost = os.lstat(old / rel)
        except (FileNotFoundError, NotADirectoryError):
            out.append(Change("A", rel, new / rel))
            continue
        if stat.S_ISDIR(st.st_mode) != stat.S_ISDIR(ost.st_mode):
            # a directory replaced by a file or the reverse: hide everything that was below
            out.append(Change("C", rel, new / rel, opaque=stat.S_ISDIR(st.st_mode)))
        elif not _same(old / rel, ost, new / rel, st):
            out.append(Change("C", rel, new / rel))
    if old is not None:
        gone_dirs: list[str] = []
        for rel, _ in walk(old):
            if rel in seen or any(rel.startswith(d + "/") for d in gone_dirs[-1:]):
                continue
            if os.path.isdir(old / rel) and not os.path.islink(old / rel):
                gone_dirs.append(rel)
            out.append(Change("D", rel))
    out.sort(key=lambda c: c.path)
    return out


class _Writer:
    def __init__(self, tar: tarfile.TarFile, root: Path) -> None:
        self.tar = tar
        self.root = root
        self.done: set[str] = set()

    def add(self, rel: str, source: Path) -> None:
        info = self.tar.gettarinfo(str(source), arcname=rel)  # tracks inodes: later links become hardlinks
        info.uname = info.gname = ""  # host user names mean nothing inside an image
        xattrs = _xattrs(source)
        if xattrs:
            info.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
            }
        if info.isreg():
            with open(source, "rb") as f:
                self.tar.addfile(info, f)
        else:
            self.tar.addfile(info)
        self.done.add(rel)

    def parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.done and (self.root / p).is_dir():
                self.add(p, self.root / p)

    def empty(self, rel: str) -> None:
        info = tarfile.TarInfo(rel)
        info.mtime = 0
        self.tar.addfile(info)


def write_tar(changes: list[Change], root: Path, out: BinaryIO) -> None:
    """Write changes as an uncompressed OCI layer; ``root`` is the tree the sources live in."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        w = _Writer(tar, root)
        for c in sorted(changes, key=lambda c: c.path):
            w.parents(c.path)
            if c.kind == "D":
                parent, _, name = c.path.rpartition("/")
                w.empty(f"{parent}/{WHITEOUT_PREFIX}{name}".lstrip("/"))
                continue
            assert c.source is not None
            if c.path not in w.done:
                w.add(c.path, c.source)
            if c.opaque:
                w.empty(f"{c.path}/{OPAQUE}")
