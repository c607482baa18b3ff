"""Digests, references and the image spec types."""

from __future__ import annotations

import hashlib
import json

import pytest

from pallet.errors import InvalidArgument
from pallet.oci import image as oci
from pallet.oci.digest import Digest
from pallet.oci.reference import parse, parse_tagged

HEX = "a" * 64


def test_digest_parse_and_compute() -> None:
    d = Digest.of(b"hello")
    assert str(d) == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert Digest.parse(str(d)) == d
    assert d.short() == d.hex[:12]
    for bad in ["sha256:abc", "md5:" + HEX[:32], HEX, "sha256:" + HEX.upper(), "sha256:../../" + HEX[:58]]:
        with pytest.raises(InvalidArgument, match="invalid digest"):
            Digest.parse(bad)


@pytest.mark.parametrize(
    ("given", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/ubuntu:22.04", "docker.io/library/ubuntu:22.04", "ubuntu:22.04"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000/a/b:c"),
        ("quay.io/org/img:v1.2-rc", "quay.io/org/img:v1.2-rc", "quay.io/org/img:v1.2-rc"),
        (f"app@sha256:{HEX}", f"docker.io/library/app@sha256:{HEX}", f"app@sha256:{HEX}"),
        (f"r.io:443/x:t@sha256:{HEX}", f"r.io:443/x:t@sha256:{HEX}", f"r.io:443/x:t@sha256:{HEX}"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
    ],
)
def test_reference_normalisation(given: str, full: str, familiar: str) -> None:
    ref = parse_tagged(given)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert parse_tagged(str(ref)) == ref


@pytest.mark.parametrize(
    "bad", ["", "UPPER", "a:", ":tag", "a//b", "a/", HEX, "a@sha256:abc", "x" * 300, "a b"]
)
def test_reference_errors(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse(bad)


def test_untagged_reference_stays_untagged() -> None:
    assert parse("busybox").tag is None
    assert parse("busybox").with_tag("1").familiar() == "busybox:1"


def _desc(mt: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": mt, "digest": str(Digest.of(data)), "size": len(data), **extra}


def test_manifest_parse_round_trip() -> None:
    m = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": _desc(oci.DOCKER_CONFIG, b"{}"),
        "layers": [_desc(oci.DOCKER_LAYER_GZIP, b"l1"), _desc(oci.OCI_LAYER_ZSTD, b"l2")],
    }
    parsed = oci.Manifest.parse(json.dumps(m).encode())
    assert parsed.media_type == oci.DOCKER_MANIFEST
    assert [oci.LAYER_COMPRESSION[x.media_type] for x in parsed.layers] == ["gzip", "zstd"]
    assert oci.Manifest.parse(parsed.to_bytes()) == parsed


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion": 1}',
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
        json.dumps(
            {"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}}
        ).encode(),
        json.dumps({"schemaVersion": 2, "config": _desc(oci.OCI_CONFIG, b"c", size=-1)}).encode(),
        json.dumps(
            {"schemaVersion": 2, "config": _desc(oci.OCI_CONFIG, b"c"), "layers": [_desc("text/html", b"x")]}
        ).encode(),
    ],
)
def test_manifest_errors(doc: bytes) -> None:
    with pytest.raises(InvalidArgument, match="invalid"):
        oci.Manifest.parse(doc)


def test_index_platform_selection() -> None:
    entries = [
        _desc(oci.OCI_MANIFEST, b"arm", platform={"os": "linux", "architecture": "arm", "variant": "v7"}),
        _desc(oci.OCI_MANIFEST, b"arm64", platform={"os": "linux", "architecture": "arm64"}),
        _desc(oci.OCI_MANIFEST, b"amd64", platform={"os": "linux", "architecture": "amd64"}),
    ]
    idx = oci.Index.parse(json.dumps({"schemaVersion": 2, "manifests": entries}).encode())
    assert idx.select(oci.Platform("linux", "amd64")).digest == Digest.of(b"amd64")
    assert idx.select(oci.Platform("linux", "arm64", "v8")).digest == Digest.of(b"arm64")
    assert idx.select(oci.Platform("linux", "arm")).digest == Digest.of(b"arm")
    with pytest.raises(InvalidArgument, match="no manifest for platform linux/s390x"):
        idx.select(oci.Platform("linux", "s390x"))


def test_config_and_chain_ids() -> None:
    ids = [Digest.of(b"one"), Digest.of(b"two"), Digest.of(b"three")]
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [str(i) for i in ids]},
    }
    parsed = oci.ImageConfig.parse(json.dumps(cfg).encode())
    assert parsed.diff_ids == ids
    chain = oci.chain_ids(ids)
    assert chain[0] == ids[0]
    c1 = hashlib.sha256(f"{ids[0]} {ids[1]}".encode()).hexdigest()
    assert chain[1].hex == c1
    assert chain[2].hex == hashlib.sha256(f"sha256:{c1} {ids[2]}".encode()).hexdigest()
    with pytest.raises(InvalidArgument, match="rootfs"):
        oci.ImageConfig.parse(b'{"rootfs": {"type": "nope"}}')
