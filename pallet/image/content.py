"""The content store: blobs addressed by digest under ``blobs/<alg>/<hex>``.

Every blob arrives through the ingest area (``ingest/<ref>/data``), is hashed as it is written, and
only becomes a blob on ``commit`` when its digest and size match what the caller expected — so a
truncated download or a lying manifest never lands in ``blobs/``. An ingest left behind by a crash
is resumed by opening a writer with the same ref: it re-hashes what is there and appends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from pallet.errors import InvalidArgument, NotFound
from pallet.oci.digest import Digest
from pallet.oci.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import IO, BinaryIO

CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """temp + fsync + rename, so readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Info(Value):
    __slots__ = ("digest", "size")

    def __init__(self, digest: Digest, size: int) -> None:
        self.digest = digest
        self.size = size


class Writer:
    """One ingest in progress; resumable from ``offset`` after a crash."""

    def __init__(self, store: ContentStore, ref: str, directory: Path) -> None:
        self._store = store
        self.ref = ref
        self._dir = directory
        import hashlib  # writers only: reading blobs (`pallet run`) needs no OpenSSL

        self._hash = hashlib.sha256()
        data = directory / "data"
        # re-hash what an earlier, interrupted writer left, then append after it
        with open(data, "ab+") as f:
            f.seek(0)
            while chunk := f.read(CHUNK):
                self._hash.update(chunk)
            self.offset = f.tell()
        # unbuffered: what ingests() reports as written is on its way to disk, not in our memory
        self._file: BinaryIO | None = open(data, "ab", buffering=0)

    def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None, "writer is closed"
        view = memoryview(data)
        while view:  # a raw write may be short
            view = view[self._file.write(view) or 0 :]
        self._hash.update(data)
        self.offset += len(data)

    def copy_from(self, stream: IO[bytes]) -> None:
        while chunk := stream.read(CHUNK):
            self.write(chunk)

    def digest(self) -> Digest:
        return Digest("sha256", self._hash.hexdigest())

    def commit(self, expected: Digest | None = None, size: int | None = None) -> Digest:
        """Verify and move into ``blobs/``; committing content that already exists is not an error."""
        assert self._file is not None, "writer is closed"
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        got = self.digest()
        try:
            if size is not None and self.offset != size:
                raise InvalidArgument(
                    f'blob "{expected or got}": size {self.offset} does not match expected {size}'
                )
            if expected is not None:
                if expected.algorithm != "sha256":
                    got = Digest.of_stream(open(self._dir / "data", "rb"), expected.algorithm)[0]
                if got != expected:
                    raise InvalidArgument(f'blob "{expected}": content has digest {got}')
            target = self._store.path(got)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.replace(self._dir / "data", target)
                fsync_dir(target.parent)
            return got
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def close(self) -> None:
        """Stop writing but keep what was written: a writer opened later with the same ref resumes."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        # an uncommitted writer leaving a with-block by an exception is abandoned, not kept for resume
        if self._file is not None:
            self.abort()


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "ingest").mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def info(self, digest: Digest) -> Info:
        try:
            return Info(digest, self.path(digest).stat().st_size)
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}": not found') from None

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}": not found') from None

    def read(self, digest: Digest) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def writer(self, ref: str) -> Writer:
        """A writer for ``ref`` (any caller-chosen name, e.g. the expected digest); resumes an old one."""
        import hashlib

        d = self.root / "ingest" / hashlib.sha256(ref.encode()).hexdigest()
        d.mkdir(exist_ok=True)
        (d / "ref").write_text(ref)
        return Writer(self, ref, d)

    def put(self, data: bytes, expected: Digest | None = None) -> Digest:
        digest = expected or Digest.of(data)
        if self.exists(digest):
            return digest
        w = self.writer(str(digest))
        w.abort()  # a put is all-or-nothing: never append to an old partial ingest
        w = self.writer(str(digest))
        w.write(data)
        return w.commit(expected, len(data))

    def ingest(self, stream: IO[bytes], expected: Digest | None = None, size: int | None = None) -> Digest:
        """Copy a stream in, verifying it against ``expected`` when given."""
        if expected is not None and self.exists(expected):
            return expected
        w = self.writer(str(expected) if expected else f"stream-{os.getpid()}-{id(stream)}")
        w.abort()
        w = self.writer(w.ref)
        with w:
            w.copy_from(stream)
            return w.commit(expected, size)

    def ingests(self) -> list[tuple[str, int]]:
        """(ref, bytes so far) of every unfinished ingest."""
        out = []
        for d in (self.root / "ingest").iterdir():
            try:
                out.append(((d / "ref").read_text(), (d / "data").stat().st_size))
            except FileNotFoundError:
                continue
        return out

    def walk(self) -> Iterator[Info]:
        for alg_dir in (self.root / "blobs").iterdir():
            for f in alg_dir.iterdir():
                yield Info(Digest(alg_dir.name, f.name), f.stat().st_size)

    def delete(self, digest: Digest) -> None:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}": not found') from None

    def gc(self, keep: Iterable[Digest], drop_ingests: bool = False) -> list[Info]:
        """Delete every blob not in ``keep`` and returns what went. Ingests are kept for resuming
        (another process may be writing one) unless ``drop_ingests`` says they are abandoned."""
        keep = set(keep)
        gone = [info for info in self.walk() if info.digest not in keep]
        for info in gone:
            self.path(info.digest).unlink(missing_ok=True)
        if drop_ingests:
            for d in (self.root / "ingest").iterdir():
                shutil.rmtree(d, ignore_errors=True)
        return gone
