"""Applying a layer tar onto a directory. A layer is hostile input.

Rules, each from a CVE class seen in the field (CVE-2018-15664, CVE-2019-14271, CVE-2021-30465):

- member names are relative and never contain ``..``; absolute names are refused, not stripped;
- parent directories are walked one component at a time with ``lstat``; a symlink met on the way is
  followed as the container would see it (an absolute target starts again at the layer root), and one
  whose relative target climbs above the root is refused — nothing is ever resolved by the host's ``/``;
- the last component is never followed: files are created with ``O_EXCL|O_NOFOLLOW`` after removing
  what was there, hardlink targets obey the same rules as names and must exist inside the root;
- extended headers are capped, so a huge pax or GNU long-name header cannot eat memory;
- ``trusted.overlay.*`` xattrs from the tar are dropped: only we may mark overlay whiteouts.

Whiteouts are written in one of three forms, chosen by the snapshot being filled:
``DELETE`` removes the hidden files (the target holds the whole parent tree: native snapshots),
``OVERLAY`` makes kernel overlayfs whiteouts (0/0 char devices, ``trusted.overlay.opaque=y``) in an
upper directory, ``OCI`` keeps the ``.wh.`` files as they are (fuse-overlayfs reads them).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from pallet.errors import InvalidArgument
from pallet.image.whiteouts import OPAQUE, WHITEOUT_PREFIX, Whiteouts
from pallet.oci.digest import Digest

MAX_HEADER = 1 << 20  # longest pax / GNU long-name header we accept
MAX_SYMLINK_HOPS = 40  # as the kernel's MAXSYMLINKS
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(InvalidArgument):
    """A layer that is malformed or tries to write outside its root."""


_LONG_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class CappedTarInfo(tarfile.TarInfo):
    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _LONG_HEADERS and self.size > MAX_HEADER:
            raise LayerError(f"tar: extended header of {self.size} bytes is larger than {MAX_HEADER}")
        return super()._proc_member(tf)  # type: ignore[misc,no-any-return]


class HashingReader:
    """Counts and hashes what passes through, so the diffID is checked while applying."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> Digest:
        return Digest("sha256", self._hash.hexdigest())


def compression_of(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head == ZSTD_MAGIC:
        return "zstd"
    return ""


@contextlib.contextmanager
def open_uncompressed(path: Path) -> Iterator[IO[bytes]]:
    """The tar stream inside a layer blob: gzip, zstd (Debian's zstd binary) or none, found by magic."""
    kind = compression_of(path)
    if kind == "gzip":
        with gzip.open(path, "rb") as g:
            yield g  # type: ignore[misc]
    elif kind == "zstd":
        try:
            proc = subprocess.Popen(
                ["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise LayerError("layer: zstd-compressed and the zstd program is not installed") from None
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            proc.stdout.close()
            err = proc.stderr.read() if proc.stderr else b""
            if proc.wait() not in (0, -13):  # -13: we stopped reading early (SIGPIPE), not zstd's fault
                raise LayerError(f"layer: bad zstd data: {err.decode(errors='replace').strip()}")
    else:
        with open(path, "rb") as f:
            yield f


def clean_name(name: str) -> tuple[str, ...]:
    """A member name as components; refuses absolute names and ``..`` rather than guessing."""
    if name.startswith("/"):
        raise LayerError(f'layer: entry "{name}": absolute path')
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(f'layer: entry "{name}": path contains ".."')
    return parts


@dataclass
class ApplyResult:
    diff_id: Digest
    size: int  # bytes of the uncompressed tar
    content_size: int  # bytes of file contents and link targets: the layer's size as docker shows it


class _Applier:
    def __init__(self, root: Path, whiteouts: Whiteouts, lowers: list[Path]) -> None:
        self.root = root
        self.whiteouts = whiteouts
        self.lowers = lowers
        self.is_root = os.geteuid() == 0
        self.added: set[tuple[str, ...]] = set()  # resolved paths this layer wrote
        self.dir_times: list[tuple[Path, int]] = []
        self.content_size = 0

    # -- path resolution ------------------------------------------------------------------------
    def resolve_parent(self, name: str, parts: tuple[str, ...], create: bool) -> tuple[str, ...] | None:
        """Resolve parts[:-1] inside the root; None if a component is missing and create is False."""
        cur: list[str] = []
        todo = list(parts[:-1])
        hops = 0
        while todo:
            p = todo.pop(0)
            if p in ("", "."):
                continue
            if p == "..":
                if not cur:
                    raise LayerError(f'layer: entry "{name}": a symlink on its path escapes the root')
                cur.pop()
                continue
            path = self.root.joinpath(*cur, p)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                # not in this layer: see it as the merged tree below does (overlay's view)
                found = self.lower_lstat((*cur, p))
                if found is None or stat.S_ISDIR(found[1].st_mode):
                    if not create:
                        return None
                    self.mkdir_like(path, found[1] if found else None)
                    self.added.add((*cur, p))
                    cur.append(p)
                    continue
                path, st = found
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise LayerError(f'layer: entry "{name}": too many levels of symlinks')
                target = os.readlink(path)
                if target.startswith("/"):
                    cur = []  # the container's "/" is the layer root
                todo = target.split("/") + todo
            elif stat.S_ISDIR(st.st_mode):
                cur.append(p)
            else:
                raise LayerError(f'layer: entry "{name}": "{"/".join((*cur, p))}" is not a directory')
        return tuple(cur)

    def lower_lstat(self, rel: tuple[str, ...]) -> tuple[Path, os.stat_result] | None:
        """The nearest lower layer's entry at ``rel``, unless a whiteout hides it."""
        for lower in self.lowers:
            path = lower.joinpath(*rel)
            if os.path.lexists(path.with_name(WHITEOUT_PREFIX + rel[-1])):
                return None
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None
            return path, st
        return None

    def mkdir_like(self, path: Path, like: os.stat_result | None) -> None:
        """An implicit parent: a copy-up of the lower directory's attributes, or 0755 when new."""
        os.mkdir(path, 0o755)
        if like is None:
            return
        if self.is_root:
            os.lchown(path, like.st_uid, like.st_gid)
        os.chmod(path, stat.S_IMODE(like.st_mode))
        self.dir_times.append((path, like.st_mtime_ns))

    def target(self, name: str, create_parents: bool = True) -> tuple[str, ...] | None:
        parts = clean_name(name)
        if not parts:
            return ()
        parent = self.resolve_parent(name, parts, create_parents)
        return None if parent is None else (*parent, parts[-1])

    # -- entries ----------------------------------------------------------------------------------
    def remove(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def whiteout(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: tuple[str, ...]) -> bool:
        """Handle a whiteout entry; False if it is an ordinary file for this mode."""
        base = parts[-1]
        if not base.startswith(WHITEOUT_PREFIX) or self.whiteouts is Whiteouts.OCI:
            return False
        parent = self.resolve_parent(m.name, parts, create=self.whiteouts is Whiteouts.OVERLAY)
        if parent is None:
            return True  # nothing below to hide
        pdir = self.root.joinpath(*parent)
        if base == OPAQUE:
            if self.whiteouts is Whiteouts.OVERLAY:
                os.setxattr(pdir, "trusted.overlay.opaque", b"y", follow_symlinks=False)
            else:
                for child in os.listdir(pdir):
                    if (*parent, child) not in self.added:
                        self.remove(pdir / child)
            return True
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX):
            raise LayerError(f'layer: entry "{m.name}": invalid whiteout')
        if (*parent, hidden) in self.added:
            return True  # a whiteout hides lower layers only (image spec)
        self.remove(pdir / hidden)
        if self.whiteouts is Whiteouts.OVERLAY:
            os.mknod(pdir / hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return True

    def entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = clean_name(m.name)
        if parts and self.whiteout(tar, m, parts):
            return
        rel = self.target(m.name)
        assert rel is not None
        path = self.root.joinpath(*rel)
        if m.isdir():
            try:
                st: os.stat_result | None = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                st = None
            if st is None:
                os.mkdir(path, 0o700)
        else:
            if not rel:
                raise LayerError(f'layer: entry "{m.name}": only a directory may name the root')
            self.remove(path)
            if m.isreg():
                self.write_file(tar, m, path)
                self.content_size += m.size
            elif m.issym():
                os.symlink(m.linkname, path)
                self.content_size += len(os.fsencode(m.linkname))
            elif m.islnk():
                self.hardlink(m, path)
                self.added.add(rel)
                return  # a hardlink shares its target's inode: no attributes of its own
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                try:
                    os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
                except PermissionError:
                    if self.is_root:
                        raise
                    return  # unprivileged: device nodes are skipped, as containerd does in a userns
            elif m.isfifo():
                os.mkfifo(path, 0o600)
            else:
                raise LayerError(f'layer: entry "{m.name}": unsupported type {m.type!r}')
        self.added.add(rel)
        self.attributes(m, path)

    def write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> None:
        src = tar.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)

    def hardlink(self, m: tarfile.TarInfo, path: Path) -> None:
        try:
            rel = self.target(m.linkname, create_parents=False)
        except LayerError as e:
            reason = str(e).split(": ", 2)[-1]
            raise LayerError(f'layer: hardlink "{m.name}": bad target "{m.linkname}": {reason}') from None
        src = None if rel is None else self.root.joinpath(*rel)
        if src is None or not os.path.lexists(src):
            raise LayerError(f'layer: hardlink "{m.name}": target "{m.linkname}" does not exist in the layer')
        if os.path.isdir(src) and not os.path.islink(src):
            raise LayerError(f'layer: hardlink "{m.name}": target "{m.linkname}" is a directory')
        os.link(src, path, follow_symlinks=False)

    def attributes(self, m: tarfile.TarInfo, path: Path) -> None:
        if self.is_root:
            os.lchown(path, m.uid, m.gid)
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr.") :]
            if name.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as e:
                if e.errno == errno.ENOTSUP or (e.errno == errno.EPERM and not self.is_root):
                    continue
                raise
        if not m.issym():
            os.chmod(path, m.mode & 0o7777)  # after chown, which clears set-id bits
        mtime = int(m.mtime * 1_000_000_000)
        if m.isdir():
            self.dir_times.append((path, mtime))  # children added later would bump it again
        else:
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def finish(self) -> None:
        for path, mtime in reversed(self.dir_times):
            # a later entry may have replaced the directory or a parent of it (with a symlink, even):
            # set the time only where the whole path is still plain directories inside the root
            if self.plain_dir(path):
                os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def plain_dir(self, path: Path) -> bool:
        cur = self.root
        for part in path.relative_to(self.root).parts:
            cur = cur / part
            try:
                if not stat.S_ISDIR(os.lstat(cur).st_mode):
                    return False
            except OSError:
                return False
        return True


def apply_tar(
    root: Path, stream: IO[bytes], whiteouts: Whiteouts = Whiteouts.DELETE, lowers: list[Path] | None = None
) -> ApplyResult:
    """Apply an uncompressed tar stream onto ``root``; returns its diffID and size.

    ``lowers`` (nearest first) are the layers below an upper directory: parents missing from the
    upper are looked up there, so a symlinked directory below (``/lib -> usr/lib``) is followed
    and an implicit parent keeps the lower directory's mode, as a mounted overlay would.
    """
    reader = HashingReader(stream)
    applier = _Applier(Path(root), whiteouts, lowers or [])
    try:
        with tarfile.open(fileobj=reader, mode="r|", tarinfo=CappedTarInfo) as tar:  # type: ignore[call-overload]
            for m in tar:
                try:
                    applier.entry(tar, m)
                except LayerError:
                    raise
                except OSError as e:
                    raise LayerError(f'layer: entry "{m.name}": {e.strerror or e}') from e
        reader.drain()
        applier.finish()
    except tarfile.TarError as e:
        raise LayerError(f"layer: bad tar: {e}") from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise LayerError(f"layer: truncated or corrupt data: {e}") from e
    except OSError as e:
        raise LayerError(f"layer: {e.strerror or e}") from e
    return ApplyResult(reader.digest(), reader.size, applier.content_size)


def apply_layer(
    root: Path, blob: Path, whiteouts: Whiteouts = Whiteouts.DELETE, lowers: list[Path] | None = None
) -> ApplyResult:
    """Apply a layer blob (gzip, zstd or plain tar) onto ``root``."""
    with open_uncompressed(blob) as stream:
        return apply_tar(root, stream, whiteouts, lowers)


def uncompressed_digest(blob: Path) -> tuple[Digest, int]:
    """The diffID of a layer blob without applying it."""
    with open_uncompressed(blob) as stream:
        reader = HashingReader(stream)
        try:
            reader.drain()
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise LayerError(f"layer: truncated or corrupt data: {e}") from e
        return reader.digest(), reader.size


def copy_uncompressed(blob: Path, out: BinaryIO) -> None:
    with open_uncompressed(blob) as stream:
        shutil.copyfileobj(stream, out, CHUNK)
