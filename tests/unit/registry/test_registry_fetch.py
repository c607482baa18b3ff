"""Downloads against a fake registry: resume after a cut, a registry that ignores Range, a tampered
blob, bearer tokens reused per scope, 401/403/404 as one-line errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from pallet.image.content import ContentStore
from pallet.image.registry import pull as pull_module
from pallet.image.registry.auth import repository_scope
from pallet.image.registry.client import Registry
from pallet.image.registry.pull import Event, _Fetcher
from pallet.oci.digest import Digest
from pallet.oci.image import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Descriptor
from tests.unit.registry.registry_fake import FakeRegistry

SCOPES = [repository_scope("a/b", "pull")]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegistry]:
    monkeypatch.setattr(pull_module, "BACKOFF", 0.0)
    f = FakeRegistry()
    yield f
    f.stop()


def fetcher(fake: FakeRegistry, tmp_path: Path, events: list[Event] | None = None) -> _Fetcher:
    content = ContentStore(tmp_path / "content")
    (tmp_path / "locks").mkdir(exist_ok=True)
    reg = Registry(fake.host)
    return _Fetcher(
        reg, "a/b", SCOPES, content, tmp_path / "locks", (events if events is not None else []).append
    )


def desc(data: bytes) -> Descriptor:
    return Descriptor(OCI_LAYER, Digest.of(data), len(data))


def test_download_verifies_and_commits(fake: FakeRegistry, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    fake.add_blob(data)
    events: list[Event] = []
    f = fetcher(fake, tmp_path, events)
    f.blob(desc(data))
    assert f.content.read(Digest.of(data)) == data
    assert f.content.ingests() == []
    assert [e.status for e in events][-2:] == ["Verifying Checksum", "Download complete"]


def test_cut_download_resumes_with_range(fake: FakeRegistry, tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    fake.add_blob(data)
    fake.cut_at, fake.cuts = 300_000, 1
    f = fetcher(fake, tmp_path)
    f.blob(desc(data))
    assert f.content.read(Digest.of(data)) == data
    ranges = [h.get("Range") for h in fake.blob_requests()]
    assert ranges == [None, "bytes=300000-"]


def test_cut_every_time_keeps_the_ingest_then_a_later_pull_resumes(
    fake: FakeRegistry, tmp_path: Path
) -> None:
    data = os.urandom(1 << 20)
    fake.add_blob(data)
    fake.cut_at, fake.cuts = 123_456, 100
    f = fetcher(fake, tmp_path)
    with pytest.raises(FailedPrecondition, match="closed the connection after 123456 of 1048576 bytes") as e:
        f.blob(desc(data))
    assert "123456 of 1048576 bytes kept to resume from" in str(e.value)
    assert f.content.ingests() == [(str(Digest.of(data)), 123_456)]
    assert not f.content.exists(Digest.of(data))
    fake.cuts = 0
    fake.requests.clear()
    fetcher(fake, tmp_path).blob(desc(data))  # a new process, the same store
    assert [h.get("Range") for h in fake.blob_requests()] == ["bytes=123456-"]
    assert f.content.read(Digest.of(data)) == data
    assert f.content.ingests() == []


def test_registry_ignoring_range_restarts_cleanly(fake: FakeRegistry, tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    fake.add_blob(data)
    fake.cut_at, fake.cuts = 500_000, 1
    fake.ignore_range = True
    f = fetcher(fake, tmp_path)
    f.blob(desc(data))
    assert f.content.read(Digest.of(data)) == data  # not the first half twice


def test_tampered_blob_leaves_nothing(fake: FakeRegistry, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    good = desc(data)
    fake.blobs[str(good.digest)] = data[:-1] + bytes([data[-1] ^ 1])
    f = fetcher(fake, tmp_path)
    with pytest.raises(InvalidArgument, match=f'digest mismatch: blob "{good.digest}": content has digest'):
        f.blob(good)
    assert f.content.ingests() == []
    assert not f.content.exists(good.digest)


def test_longer_blob_than_manifest_says(fake: FakeRegistry, tmp_path: Path) -> None:
    data = os.urandom(10_000)
    d = desc(data)
    fake.blobs[str(d.digest)] = data + b"extra"
    f = fetcher(fake, tmp_path)
    with pytest.raises(InvalidArgument, match="more than the 10000 bytes"):
        f.blob(d)
    assert f.content.ingests() == []


def test_missing_blob_is_not_found_and_leaves_no_ingest(fake: FakeRegistry, tmp_path: Path) -> None:
    f = fetcher(fake, tmp_path)
    with pytest.raises(NotFound, match="blob unknown to registry"):
        f.blob(desc(b"absent"))
    assert f.content.ingests() == []


def test_bearer_token_fetched_once_per_scope() -> None:
    fake = FakeRegistry(bearer=True)
    try:
        blobs = [fake.add_blob(os.urandom(1000 + i)) for i in range(5)]
        reg = Registry(fake.host)
        for b in blobs:
            resp = reg.get_blob("a/b", Digest.parse(b), SCOPES)
            resp.read()
        assert reg.token_requests == 1
        assert len(fake.token_requests) == 1
        assert "scope=repository%3Aa%2Fb%3Apull" in fake.token_requests[0]
        assert "service=fake" in fake.token_requests[0]
        # another scope set: another token
        resp = reg.get_blob("a/b", Digest.parse(blobs[0]), [repository_scope("a/b", "pull", "push")])
        resp.read()
        assert reg.token_requests == 2
    finally:
        fake.stop()


def test_forbidden_and_unknown_manifest(fake: FakeRegistry) -> None:
    reg = Registry(fake.host)
    with pytest.raises(NotFound, match="manifest unknown"):
        reg.get_manifest("a/b", "latest", SCOPES)
    fake.forbid = True
    with pytest.raises(PermissionDenied, match="denied: requested access to the resource is denied"):
        reg.get_manifest("a/b", "latest", SCOPES)


def test_manifest_by_digest_is_verified(fake: FakeRegistry) -> None:
    real = b'{"schemaVersion":2}'
    want = Digest.of(real)
    fake.manifests[str(want)] = ("application/vnd.oci.image.manifest.v1+json", b'{"schemaVersion":2 }')
    with pytest.raises(InvalidArgument, match="registry sent content with digest"):
        Registry(fake.host).get_manifest("a/b", str(want), SCOPES)


def test_manifest_media_type_from_document_or_shape(fake: FakeRegistry) -> None:
    reg = Registry(fake.host)
    bare = (
        b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:'
        + b"0" * 64
        + b'","size":1},"layers":[]}'
    )
    fake.manifests["m"] = ("application/json", bare)
    got = reg.get_manifest("a/b", "m", SCOPES)
    assert (got.media_type, got.digest, got.data) == (OCI_MANIFEST, Digest.of(bare), bare)
    fake.manifests["i"] = ("application/json", b'{"schemaVersion":2,"manifests":[]}')
    assert reg.get_manifest("a/b", "i", SCOPES).media_type == OCI_INDEX
    listed = b'{"schemaVersion":2,"mediaType":"' + DOCKER_MANIFEST_LIST.encode() + b'","manifests":[]}'
    fake.manifests["l"] = ("text/plain", listed)
    assert reg.get_manifest("a/b", "l", SCOPES).media_type == DOCKER_MANIFEST_LIST
