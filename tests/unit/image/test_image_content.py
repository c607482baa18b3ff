"""The content store: verified commits, resumable ingests, garbage collection."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pallet.errors import InvalidArgument, NotFound
from pallet.image.content import ContentStore
from pallet.oci.digest import Digest


def test_put_read_and_layout(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    d = cs.put(b"hello")
    assert d == Digest.of(b"hello")
    assert (tmp_path / "blobs" / "sha256" / d.hex).read_bytes() == b"hello"
    assert cs.read(d) == b"hello" and cs.info(d).size == 5
    assert cs.put(b"hello") == d  # idempotent


def test_wrong_digest_or_size_never_becomes_a_blob(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    lie = Digest.of(b"something else")
    with pytest.raises(InvalidArgument, match="content has digest"):
        cs.ingest(io.BytesIO(b"payload"), lie)
    with pytest.raises(InvalidArgument, match="size 7 does not match expected 8"):
        cs.ingest(io.BytesIO(b"payload"), Digest.of(b"payload"), 8)
    assert list(cs.walk()) == [] and cs.ingests() == []
    with pytest.raises(NotFound):
        cs.read(lie)


def test_interrupted_ingest_resumes(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    data = os.urandom(3 << 20)
    w = cs.writer("big")
    w.write(data[:1000])
    w._file.close()  # type: ignore[union-attr]  # the process "crashes" here
    assert cs.ingests() == [("big", 1000)]
    w2 = ContentStore(tmp_path).writer("big")
    assert w2.offset == 1000
    w2.write(data[1000:])
    assert w2.commit(Digest.of(data), len(data)) == Digest.of(data)
    assert cs.read(Digest.of(data)) == data and cs.ingests() == []


def test_gc_keeps_referenced_and_in_progress(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    keep, drop = cs.put(b"keep"), cs.put(b"drop")
    w = cs.writer("busy")
    w.write(b"partial")
    gone = cs.gc({keep})
    assert [g.digest for g in gone] == [drop]
    assert cs.exists(keep) and not cs.exists(drop)
    assert cs.ingests() == [("busy", 7)]
    w.abort()
