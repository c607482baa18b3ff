"""Changes between trees and the layer tar that records them: applying the diff onto the old tree
must give the new one."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from pallet.image.diff import dir_changes, overlay_changes, write_tar
from pallet.image.layers import apply_tar
from tests.unit.image.tarutil import tree


def _mk(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_dir_changes_round_trip(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _mk(old, {"etc/a": "1", "etc/b": "2", "gone/x": "3", "gone/y/z": "4", "same": "s", "f2d": "f"})
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    (new / "etc/a").write_text("changed!")
    (new / "etc/b").unlink()
    shutil.rmtree(new / "gone")
    (new / "f2d").unlink()
    _mk(new, {"f2d/inner": "i", "added/deep/file": "d"})
    os.symlink("etc/a", new / "link")
    changes = dir_changes(old, new)
    kinds = {(c.kind, c.path) for c in changes}
    assert {("C", "etc/a"), ("D", "etc/b"), ("D", "gone"), ("A", "added/deep/file"), ("A", "link")} <= kinds
    assert ("D", "gone/x") not in kinds and not any(c.path == "same" for c in changes)
    layer = tmp_path / "layer.tar"
    with open(layer, "wb") as f:
        write_tar(changes, new, f)
    names = tarfile.open(layer).getnames()
    assert "etc/.wh.b" in names and ".wh.gone" in names and "f2d/.wh..wh..opq" in names
    replay = tmp_path / "replay"
    subprocess.run(["cp", "-a", f"{old}/.", str(replay)], check=True)
    with open(layer, "rb") as f:
        apply_tar(replay, f)
    assert tree(replay) == tree(new)


def test_export_of_a_whole_tree_keeps_hardlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _mk(src, {"a/f": "data"})
    os.link(src / "a/f", src / "a/g")
    out = tmp_path / "t.tar"
    with open(out, "wb") as f:
        write_tar(dir_changes(None, src), src, f)
    members = {m.name: m for m in tarfile.open(out).getmembers()}
    assert members["a/g"].islnk() and members["a/g"].linkname == "a/f"
    assert members["a/f"].uname == ""  # host user names never leak into images


def test_overlay_changes_read_file_whiteouts(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    _mk(lower, {"etc/a": "1", "etc/b": "2", "o/x": "3"})
    _mk(upper, {"etc/a": "new", "etc/.wh.b": "", "fresh": "f", "o/.wh..wh..opq": "", "o/y": "y"})
    got = {(c.kind, c.path, c.opaque) for c in overlay_changes(upper, [lower])}
    assert got == {
        ("C", "etc", False),
        ("C", "etc/a", False),
        ("D", "etc/b", False),
        ("A", "fresh", False),
        ("C", "o", True),
        ("A", "o/y", False),
    }
