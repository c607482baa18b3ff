"""One conformance suite run against every snapshotter (containerd's testsuite idea), on a temp root,
without mounting: what a snapshot holds is checked through ``apply_dir`` and ``changes``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pallet.image.layers import Whiteouts
from pallet.image.snapshots import ACTIVE, COMMITTED, VIEW, Snapshotter, open_snapshotter

KINDS = ["overlay", "native", "fuse-overlayfs"]


@pytest.fixture(params=KINDS)
def sn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Snapshotter]:
    s = open_snapshotter(request.param, tmp_path / "snapshots")
    yield s
    s.close()


def write(sn: Snapshotter, key: str, files: dict[str, str]) -> None:
    root, _ = sn.apply_dir(key)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def committed_layer(sn: Snapshotter, name: str, parent: str, files: dict[str, str]) -> None:
    sn.prepare(f"tmp-{name}", parent)
    write(sn, f"tmp-{name}", files)
    sn.commit(name, f"tmp-{name}")


def test_prepare_commit_stat(sn: Snapshotter) -> None:
    mounts = sn.prepare("a", labels={"x": "1"})
    assert mounts and mounts[0].type == "bind" and "rw" in mounts[0].options
    info = sn.stat("a")
    assert (info.kind, info.name, info.parent, info.labels) == (ACTIVE, "a", "", {"x": "1"})
    write(sn, "a", {"f": "hello"})
    sn.commit("base", "a", labels={"y": "2"})
    with pytest.raises(NotFound, match='snapshot "a": not found'):
        sn.stat("a")
    info = sn.stat("base")
    assert (info.kind, info.labels) == (COMMITTED, {"x": "1", "y": "2"})
    assert sn.usage("base").size == 5


def test_child_sees_parent_and_changes_only_its_own(sn: Snapshotter) -> None:
    committed_layer(sn, "l1", "", {"etc/a": "1", "etc/b": "2"})
    committed_layer(sn, "l2", "l1", {"etc/c": "3"})
    sn.prepare("c1", "l2")
    assert sn.stat("c1").parent == "l2"
    write(sn, "c1", {"etc/new": "n"})
    _, changes = sn.changes("c1")
    assert ("A", "etc/new") in [(c.kind, c.path) for c in changes]
    assert not any(c.path in ("etc/a", "etc/b", "etc/c") for c in changes)
    assert sn.usage("c1").size >= 1


def test_mounts_stack_parents_nearest_first(sn: Snapshotter) -> None:
    committed_layer(sn, "l1", "", {"a": "1"})
    committed_layer(sn, "l2", "l1", {"b": "2"})
    m = sn.prepare("c", "l2")
    assert sn.mounts("c") == m
    if m[0].type == "bind":  # native: a full copy
        assert sorted(os.listdir(m[0].source)) == ["a", "b"]
        return
    lower = (m[0].option("lowerdir") or "").split(":")
    assert len(lower) == 2
    assert sorted(os.listdir(lower[0])) == ["b"] and sorted(os.listdir(lower[1])) == ["a"]
    assert m[0].option("upperdir") and m[0].option("workdir")


def test_view_is_read_only(sn: Snapshotter) -> None:
    committed_layer(sn, "l1", "", {"a": "1"})
    m = sn.view("v", "l1")
    assert sn.stat("v").kind == VIEW
    assert "ro" in m[0].options or m[0].option("upperdir") is None
    with pytest.raises(FailedPrecondition, match="cannot commit a view snapshot"):
        sn.commit("x", "v")
    with pytest.raises(InvalidArgument, match="active snapshots only"):
        sn.apply_dir("v")


def test_errors_name_the_snapshot(sn: Snapshotter) -> None:
    sn.prepare("a")
    with pytest.raises(AlreadyExists, match='snapshot "a": already exists'):
        sn.prepare("a")
    with pytest.raises(NotFound, match='parent "nope" not found'):
        sn.prepare("b", "nope")
    with pytest.raises(FailedPrecondition, match='parent "a" is not committed'):
        sn.prepare("b", "a")
    sn.commit("c", "a")
    with pytest.raises(InvalidArgument, match='snapshot "c": a committed snapshot has no mounts'):
        sn.mounts("c")
    with pytest.raises(NotFound):
        sn.remove("missing")
    with pytest.raises(InvalidArgument):
        sn.prepare("")


def test_failed_prepare_leaves_nothing(sn: Snapshotter) -> None:
    before = sorted(os.listdir(sn.root / "snapshots"))
    with pytest.raises(NotFound):
        sn.prepare("b", "nope")
    assert sorted(os.listdir(sn.root / "snapshots")) == before
    assert [i.name for i in sn.walk()] == []


def test_remove_refuses_parents_and_deletes_directories(sn: Snapshotter) -> None:
    committed_layer(sn, "l1", "", {"a": "1"})
    sn.prepare("c", "l1")
    with pytest.raises(FailedPrecondition, match='"l1": in use as the parent of "c"'):
        sn.remove("l1")
    sn.remove("c")
    sn.remove("l1")
    assert list(sn.walk()) == []
    assert os.listdir(sn.root / "snapshots") == []


def test_walk_lists_every_snapshot(sn: Snapshotter) -> None:
    committed_layer(sn, "l1", "", {"a": "1"})
    sn.prepare("c", "l1")
    sn.view("v", "l1")
    assert sorted((i.name, i.kind, i.parent) for i in sn.walk()) == [
        ("c", ACTIVE, "l1"),
        ("l1", COMMITTED, ""),
        ("v", VIEW, "l1"),
    ]


def test_whiteout_form_fits_the_snapshotter(sn: Snapshotter) -> None:
    committed_layer(sn, "l1", "", {"a": "1"})
    sn.prepare("base2")
    assert sn.apply_dir("base2")[1] is Whiteouts.DELETE  # nothing below to hide
    sn.prepare("c", "l1")
    expected = {"overlayfs": Whiteouts.OVERLAY, "native": Whiteouts.DELETE, "fuse-overlayfs": Whiteouts.OCI}
    assert sn.apply_dir("c")[1] is expected[sn.name]


def test_cleanup_removes_orphan_directories(sn: Snapshotter) -> None:
    sn.prepare("a")
    (sn.root / "snapshots" / "new-crashed").mkdir()
    (sn.root / "snapshots" / "999").mkdir()
    sn.cleanup()
    assert [i.name for i in sn.walk()] == ["a"]
    assert sorted(os.listdir(sn.root / "snapshots")) == ["1"]
