"""Snapshotters with containerd's interface: prepare, view, commit, remove, mounts, stat, usage, walk.

A snapshotter computes mounts and never performs them; whoever uses a snapshot mounts it
(``pallet.image.mount`` for the CLI and tests, the runtime for containers). "key" names an active or
view snapshot, "name" a committed one; both live in one namespace, as in containerd.

Beyond containerd's interface each implementation says where a layer is written (``apply_dir``) and
what changed in an active snapshot (``changes``), so unpack and commit never need a mount.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pallet.image.snapshots.meta import ACTIVE, COMMITTED, VIEW, Info, MetaStore, Usage
from pallet.image.whiteouts import Whiteouts
from pallet.oci.value import Value

TYPE_CHECKING = False  # typing itself is not loaded for this: diff.py (tarfile) is for commit and diff only
if TYPE_CHECKING:
    from pallet.image.diff import Change

__all__ = ["ACTIVE", "COMMITTED", "VIEW", "Info", "Mount", "Snapshotter", "Usage", "open_snapshotter"]


class Mount(Value):
    """containerd's Mount, the lingua franca: what mount(2) (or a FUSE helper) is to be given."""

    __slots__ = ("type", "source", "options")

    def __init__(self, type: str, source: str, options: list[str] | None = None) -> None:
        self.type = type
        self.source = source
        self.options = [] if options is None else options

    def option(self, name: str) -> str | None:
        prefix = name + "="
        for opt in self.options:
            if opt.startswith(prefix):
                return opt[len(prefix) :]
        return None


def disk_usage(path: Path) -> Usage:
    """Apparent size of regular files and symlinks, each inode counted once (like docker's layer size)."""
    seen: set[int] = set()
    size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                size += st.st_size
    return Usage(size, len(seen))


class Snapshotter:
    """The shared part: metadata and directory lifecycle. Subclasses say what a snapshot's mounts are."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "snapshots").mkdir(parents=True, exist_ok=True)
        self.meta = MetaStore(self.root / "metadata.db")

    # -- layout ---------------------------------------------------------------------------------
    def _dir(self, sid: int) -> Path:
        return self.root / "snapshots" / str(sid)

    def _fs(self, sid: int) -> Path:
        return self._dir(sid) / "fs"

    def _populate(self, new: Path, parent_ids: list[int], kind: str) -> None:
        """Fill a fresh snapshot directory (``new`` holds an empty ``fs``); overridden by native."""
        (new / "work").mkdir()

    # -- containerd's interface -------------------------------------------------------------------
    def stat(self, key: str) -> Info:
        return self.meta.get(key)[1]

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return self._create(key, parent, ACTIVE, labels or {})

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return self._create(key, parent, VIEW, labels or {})

    def mounts(self, key: str) -> list[Mount]:
        sid, info = self.meta.get(key)
        if info.kind == COMMITTED:
            raise InvalidArgument(f'snapshot "{key}": a committed snapshot has no mounts, make a view of it')
        return self._mounts(info.kind, self.meta.ids(key))

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        sid, info = self.meta.get(key)
        usage = self._own_usage(sid)
        self.meta.commit(name, key, usage, labels or {})

    def remove(self, key: str) -> None:
        sid = self.meta.remove(key)
        self._delete_dir(sid)

    def usage(self, key: str) -> Usage:
        """Disk used by this snapshot alone, not its parents."""
        committed = self.meta.committed_usage(key)
        if committed is not None:
            return committed
        return self._own_usage(self.meta.get(key)[0])

    def walk(self) -> Iterator[Info]:
        yield from self.meta.walk()

    def close(self) -> None:
        self.meta.close()

    # -- Pallet's extensions ------------------------------------------------------------------------
    def apply_dir(self, key: str) -> tuple[Path, Whiteouts]:
        """Where to unpack a layer into the active snapshot ``key``, and in which whiteout form."""
        sid, info = self.meta.get(key)
        if info.kind != ACTIVE:
            raise InvalidArgument(
                f'snapshot "{key}": layers unpack into active snapshots only, not {info.kind}'
            )
        return self._fs(sid), (self.whiteouts if info.parent else Whiteouts.DELETE)

    whiteouts = Whiteouts.OVERLAY

    def lower_dirs(self, key: str) -> list[Path]:
        """The directories below ``key``'s own, nearest first; empty where a snapshot is a full copy."""
        return [self._fs(i) for i in self.meta.ids(key)[1:]]

    def changes(self, key: str) -> tuple[Path, list[Change]]:
        """What changed in ``key`` against its parent, and the directory the changed files are in."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove directories left by a crash between a metadata change and its directory change."""
        known = self.meta.all_ids()
        for d in (self.root / "snapshots").iterdir():
            if not (d.name.isdigit() and int(d.name) in known):
                shutil.rmtree(d, ignore_errors=True)

    # -- internals ------------------------------------------------------------------------------
    def _create(self, key: str, parent: str, kind: str, labels: dict[str, str]) -> list[Mount]:
        # build the directory under a temporary name first: a failure leaves no row and no directory
        self._check_new(key, parent)  # early, so a native copy is not made for nothing
        tmp = self.root / "snapshots" / f"new-{os.urandom(6).hex()}"
        (tmp / "fs").mkdir(parents=True)
        try:
            parent_ids = self.meta.ids(parent) if parent else []
            self._populate(tmp, parent_ids, kind)
            sid = self.meta.create(key, parent, kind, labels)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.rename(tmp, self._dir(sid))
        return self._mounts(kind, [sid, *parent_ids])

    def _check_new(self, key: str, parent: str) -> None:
        try:
            self.meta.get(key)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f'snapshot "{key}": already exists')
        if parent:
            try:
                info = self.meta.get(parent)[1]
            except NotFound:
                raise NotFound(f'snapshot "{key}": parent "{parent}" not found') from None
            if info.kind != COMMITTED:
                raise FailedPrecondition(f'snapshot "{key}": parent "{parent}" is not committed')

    def _delete_dir(self, sid: int) -> None:
        d = self._dir(sid)
        if d.exists():
            gone = d.with_name(f"rm-{sid}")
            os.rename(d, gone)
            shutil.rmtree(gone)

    def _own_usage(self, sid: int) -> Usage:
        return disk_usage(self._fs(sid))

    def _mounts(self, kind: str, ids: list[int]) -> list[Mount]:
        raise NotImplementedError


def open_snapshotter(name: str, root: Path) -> Snapshotter:
    """The snapshotter called ``name``, keeping its state under ``root/<name>``."""
    # only the one asked for is imported: native's (subprocess, diff.py) is not on overlay's way
    cls: type[Snapshotter]
    if name in ("overlay", "overlayfs"):
        from pallet.image.snapshots.overlay import OverlaySnapshotter as cls
    elif name == "native":
        from pallet.image.snapshots.native import NativeSnapshotter as cls
    elif name == "fuse-overlayfs":
        from pallet.image.snapshots.fuse import FuseOverlaySnapshotter as cls
    else:
        raise InvalidArgument(f'unknown snapshotter "{name}" (have overlay, native, fuse-overlayfs)')
    return cls(Path(root) / cls.name)


def default_snapshotter_name() -> str:
    """overlay where the kernel has it and we may mount it, else fuse-overlayfs, else native copies."""
    try:
        has_overlay = "\toverlay\n" in Path("/proc/filesystems").read_text()
    except OSError:
        has_overlay = False
    if has_overlay and os.geteuid() == 0:
        return "overlay"
    if shutil.which("fuse-overlayfs") and os.path.exists("/dev/fuse"):
        return "fuse-overlayfs"
    return "native"
