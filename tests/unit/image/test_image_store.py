"""The image library end to end on the native snapshotter (no root, no mounts): import, load, save,
tag, remove, prune, garbage collection, commit, diff and export."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.errors import Conflict, InvalidArgument, NotFound
from pallet.image import archive, rootfs
from pallet.image.images import Images
from pallet.image.layers import LayerError
from tests.unit.image.tarutil import d, docker_archive, f, oci_layout, sym, tar_bytes

BASE = [
    d("etc"),
    f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    f("etc/group", b"root:x:0:\n"),
    d("bin"),
    f("bin/sh", b"#!", mode=0o755),
]


@pytest.fixture
def imgs(tmp_path: Path) -> Iterator[Images]:
    i = Images(tmp_path / "root", "native")
    yield i
    i.close()


def blobs(i: Images) -> set[str]:
    return {str(x.digest) for x in i.content.walk()}


def test_load_oci_layout_and_lookup(imgs: Images, tmp_path: Path) -> None:
    ids = oci_layout(
        tmp_path / "layout",
        [tar_bytes(BASE), tar_bytes([f("etc/motd", b"hi")])],
        "example.com/app:1.0",
        compress=True,
    )
    [loaded] = archive.load(imgs, tmp_path / "layout")
    assert [str(t) for t in loaded.tags] == ["example.com/app:1.0"]
    image = imgs.get("example.com/app:1.0")
    assert str(image.id) == ids["config"]
    for name in [
        ids["config"],
        image.id.hex[:12],
        image.id.hex[:5],
        ids["manifest"],
        f"example.com/app@{ids['manifest']}",
    ]:
        assert imgs.get(name).id == image.id
    with pytest.raises(NotFound, match='image "example.com/app:2.0": not found'):
        imgs.get("example.com/app:2.0")
    assert len(image.chain_ids()) == 2 and len(list(imgs.snapshots.walk())) == 2


def test_shared_base_layer_is_unpacked_once(imgs: Images, tmp_path: Path) -> None:
    base = tar_bytes(BASE)
    oci_layout(tmp_path / "a", [base, tar_bytes([f("a", b"a")])], "a:1")
    oci_layout(tmp_path / "b", [base, tar_bytes([f("b", b"b")])], "b:1")
    archive.load(imgs, tmp_path / "a")
    archive.load(imgs, tmp_path / "b")
    names = [i.name for i in imgs.snapshots.walk()]
    assert len(names) == 3  # one base + two tops
    [ua, ub] = sorted(imgs.disk_usage(), key=lambda u: u.image.tags[0].path)
    assert ua.shared == ub.shared > 0 and ua.unique == 1 and ub.unique == 1


def test_docker_archive_load_save_round_trip(imgs: Images, tmp_path: Path) -> None:
    image_id = docker_archive(
        tmp_path / "in.tar", [tar_bytes(BASE), tar_bytes([f(".wh.bin")])], ["busybox:latest", "bb:x"]
    )
    loaded = archive.load(imgs, tmp_path / "in.tar")
    assert [t.familiar() for t in loaded[0].tags] == ["busybox:latest", "bb:x"]
    assert str(imgs.get("busybox").id) == image_id
    archive.save(imgs, ["busybox"], tmp_path / "out.tar", "docker-archive")
    manifest = json.loads(tarfile.open(tmp_path / "out.tar").extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    other = Images(tmp_path / "other", "native")
    try:
        archive.load(other, tmp_path / "out.tar")
        assert str(other.get("busybox:latest").id) == image_id
    finally:
        other.close()


def test_oci_archive_round_trip_keeps_manifest_digest(imgs: Images, tmp_path: Path) -> None:
    ids = oci_layout(tmp_path / "l", [tar_bytes(BASE)], "app:v1", compress=True)
    archive.load(imgs, tmp_path / "l")
    archive.save(imgs, ["app:v1"], tmp_path / "o.tar", "oci-archive")
    archive.save(imgs, ["app:v1"], tmp_path / "odir", "oci-dir")
    index = json.loads((tmp_path / "odir" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == ids["manifest"]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/app:v1"
    other = Images(tmp_path / "other", "native")
    try:
        archive.load(other, tmp_path / "o.tar")
        assert str(other.get("app:v1").record.manifest) == ids["manifest"]
    finally:
        other.close()


def test_blob_with_wrong_digest_is_refused_and_leaves_nothing(imgs: Images, tmp_path: Path) -> None:
    ids = oci_layout(tmp_path / "l", [tar_bytes(BASE)], "app:v1")
    manifest = json.loads((tmp_path / "l/blobs/sha256" / ids["manifest"][7:]).read_text())
    layer = tmp_path / "l/blobs/sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[600] ^= 1
    layer.write_bytes(bytes(data))
    with pytest.raises(InvalidArgument, match="content has digest"):
        archive.load(imgs, tmp_path / "l")
    assert imgs.all() == [] and blobs(imgs) == set() and list(imgs.snapshots.walk()) == []


def test_diff_id_mismatch_is_refused_and_leaves_nothing(imgs: Images, tmp_path: Path) -> None:
    docker_archive(tmp_path / "in.tar", [tar_bytes(BASE)], ["x:1"])
    # swap the layer for another one while the config keeps the old diffID
    with tarfile.open(tmp_path / "in.tar") as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(tmp_path / "bad.tar", "w") as t:
        for m, data in members:
            if m.name.endswith("layer.tar"):
                data = tar_bytes([f("other", b"!")])
                m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    with pytest.raises(LayerError, match="content has diffID"):
        archive.load(imgs, tmp_path / "bad.tar")
    assert imgs.all() == [] and blobs(imgs) == set() and list(imgs.snapshots.walk()) == []


def test_hostile_layer_in_archive_writes_nothing_outside(imgs: Images, tmp_path: Path) -> None:
    (tmp_path / "victim").mkdir()
    evil = tar_bytes(
        [sym("x", "../../../../../../../../" + str(tmp_path / "victim").lstrip("/")), f("x/owned", b"!")]
    )
    docker_archive(tmp_path / "evil.tar", [evil], ["evil:1"])
    with pytest.raises(LayerError, match="escapes the root"):
        archive.load(imgs, tmp_path / "evil.tar")
    assert os.listdir(tmp_path / "victim") == []
    assert imgs.all() == [] and list(imgs.snapshots.walk()) == []


def test_archive_member_paths_cannot_leave_the_archive(imgs: Images, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    lay = tmp_path / "dir"
    lay.mkdir()
    (lay / "manifest.json").write_text(json.dumps([{"Config": "../secret.json", "Layers": []}]))
    with pytest.raises(InvalidArgument, match="leaves the archive"):
        archive.load(imgs, lay)
    with pytest.raises(InvalidArgument, match="neither a tar archive nor an image layout"):
        archive.load(imgs, tmp_path / "secret.json")


def test_tag_remove_prune_and_gc(imgs: Images, tmp_path: Path) -> None:
    oci_layout(tmp_path / "l", [tar_bytes(BASE)], "app:v1")
    archive.load(imgs, tmp_path / "l")
    imgs.tag("app:v1", "app:v2")
    image = imgs.get("app:v2")
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        imgs.remove(image.id.hex[:12])
    with pytest.raises(InvalidArgument, match="digest"):
        imgs.tag("app:v1", "app@sha256:" + "a" * 64)
    assert imgs.remove("app:v2") == [("Untagged", "app:v2")]
    imgs.prepare("ctr1", "app:v1")
    with pytest.raises(Conflict, match='snapshot "ctr1"'):
        imgs.remove("app:v1")
    imgs.snapshots.remove("ctr1")
    report = imgs.remove("app:v1")
    assert report == [("Untagged", "app:v1"), ("Deleted", str(image.id))]
    assert imgs.all() == [] and blobs(imgs) == set() and list(imgs.snapshots.walk()) == []


def test_prune_dangling_only_unless_all(imgs: Images, tmp_path: Path) -> None:
    oci_layout(tmp_path / "a", [tar_bytes(BASE)], "")
    oci_layout(tmp_path / "b", [tar_bytes([f("b", b"b")])], "b:1")
    archive.load(imgs, tmp_path / "a")
    archive.load(imgs, tmp_path / "b")
    report, freed = imgs.prune()
    assert [k for k, _ in report] == ["deleted"] and freed > 0
    assert [t.familiar() for t in imgs.all()[0].tags] == ["b:1"]
    report, _ = imgs.prune(all_unused=True)
    assert imgs.all() == [] and ("untagged", "b:1") in report


def test_import_commit_diff_export(imgs: Images, tmp_path: Path) -> None:
    (tmp_path / "rootfs.tar").write_bytes(tar_bytes(BASE))
    base = rootfs.import_rootfs(
        imgs, tmp_path / "rootfs.tar", "base:1", changes=['CMD ["/bin/sh"]', "ENV A=1"]
    )
    assert base.config.config == {"Cmd": ["/bin/sh"], "Env": ["A=1"]}
    imgs.prepare("ctr", "base:1")
    root, _ = imgs.snapshots.apply_dir("ctr")
    (root / "etc/group").unlink()
    (root / "etc/new").write_text("new")
    assert rootfs.diff(imgs, "ctr") == [("C", "/etc"), ("D", "/etc/group"), ("A", "/etc/new")]
    image = rootfs.commit(imgs, "ctr", "base:2", message="msg", changes=["WORKDIR /etc"])
    assert len(image.config.diff_ids) == 2 and image.config.history[-1].comment == "msg"
    assert image.config.config["WorkingDir"] == "/etc" and image.config.config["Cmd"] == ["/bin/sh"]
    layer = tarfile.open(imgs.content.path(image.manifest.layers[-1].digest))
    assert sorted(layer.getnames()) == ["etc", "etc/.wh.group", "etc/new"]
    imgs.prepare("ctr2", "base:2")
    out = io.BytesIO()
    rootfs.export(imgs, "ctr2", out)
    names = set(tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames())
    assert {"etc/new", "etc/passwd", "bin/sh"} <= names and "etc/group" not in names


def test_import_of_garbage_leaves_nothing(imgs: Images, tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x1f\x8b" + b"junk" * 100)
    with pytest.raises(InvalidArgument):
        rootfs.import_rootfs(imgs, tmp_path / "junk", "x:1")
    assert imgs.all() == [] and blobs(imgs) == set()


def test_a_lease_keeps_gc_out_and_discards_its_blobs_on_failure(imgs: Images, tmp_path: Path) -> None:
    import fcntl

    probe = os.open(imgs.root / "image" / "gc.lock", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(RuntimeError, match="boom"), imgs.lease() as lease:
            lease.blobs.append(imgs.content.put(b"half an image"))
            with pytest.raises(BlockingIOError):  # what gc would take: exclusive
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise RuntimeError("boom")
        assert blobs(imgs) == set()
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the lease
    finally:
        os.close(probe)


def test_multi_platform_index_loads_this_machines_image(imgs: Images, tmp_path: Path) -> None:
    from pallet.oci import image as oci
    from pallet.oci.digest import Digest

    lay = tmp_path / "multi"
    ids = oci_layout(lay, [tar_bytes([f("native", b"yes")])])
    index = json.loads((lay / "index.json").read_text())
    native = index["manifests"][0]
    native["platform"] = oci.Platform.host().to_dict()
    foreign = {
        "mediaType": oci.OCI_MANIFEST,
        "digest": "sha256:" + "0" * 64,
        "size": 2,
        "platform": {"os": "linux", "architecture": "s390x"},
    }
    nested = json.dumps(
        {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [foreign, native]}
    ).encode()
    (lay / "blobs/sha256" / Digest.of(nested).hex).write_bytes(nested)
    top = {"mediaType": oci.OCI_INDEX, "digest": str(Digest.of(nested)), "size": len(nested)}
    top["annotations"] = {"io.containerd.image.name": "multi:1"}
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    [loaded] = archive.load(imgs, lay)
    assert str(loaded.image.record.manifest) == ids["manifest"] and loaded.tags[0].familiar() == "multi:1"


def test_gc_and_rmi_see_every_snapshotter_under_the_root(imgs: Images, tmp_path: Path) -> None:
    oci_layout(tmp_path / "l", [tar_bytes(BASE)], "app:v1")
    archive.load(imgs, tmp_path / "l")  # unpacked by native
    fuse = Images(imgs.root, "fuse-overlayfs")
    try:
        fuse.prepare("ctr", "app:v1")  # unpacked again, lazily, by another snapshotter
        with pytest.raises(Conflict, match='snapshot "ctr"'):
            imgs.remove("app:v1")  # the container lives in the other snapshotter
        fuse.snapshots.remove("ctr")
    finally:
        fuse.close()
    imgs.remove("app:v1")
    for name in ("native", "fuse-overlayfs"):
        other = Images(imgs.root, name)
        assert list(other.snapshots.walk()) == []
        other.close()


def test_archive_with_a_huge_header_is_refused(imgs: Images, tmp_path: Path) -> None:
    info = tarfile.TarInfo("manifest.json")
    info.pax_headers = {"comment": "a" * (2 << 20)}
    with tarfile.open(tmp_path / "huge.tar", "w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(info, io.BytesIO(b""))
    with pytest.raises(LayerError, match="extended header"):
        archive.load(imgs, tmp_path / "huge.tar")
