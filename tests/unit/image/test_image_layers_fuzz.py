"""Property check without extra dependencies: random layers built from hostile pieces (``..``,
absolute names, symlinks out, hardlinks out, whiteouts, type changes) either apply or fail with a
LayerError, and never change anything outside the root. Seeded, so every run checks the same cases."""

from __future__ import annotations

import os
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from pallet.image.layers import LayerError, Whiteouts, apply_layer
from tests.unit.image.tarutil import d, entry, f, hard, sym, tree, write_layer

PARTS = ["a", "b", ".", "esc", "abs", "x", ".wh.a", ".wh..wh..opq", ""]


def _name(rng: random.Random) -> str:
    """Mostly names that pass the lexical checks, so the symlink and hardlink rules get exercised."""
    name = "/".join(rng.choice(PARTS) for _ in range(rng.randint(1, 4))) or "a"
    if rng.random() < 0.08:
        name = rng.choice(["../", "/", "a/../../"]) + name
    return name


def _layer(rng: random.Random, outside: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    targets = ["../outside", str(outside), "..", "/", "a", "../../..", "esc/../..", "abs/secret", "."]
    out = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.choice(["file", "dir", "sym", "hard", "fifo"])
        name = _name(rng)
        if kind == "file":
            out.append(f(name, b"pwned"))
        elif kind == "dir":
            out.append(d(name))
        elif kind == "sym":
            out.append(sym(name, rng.choice(targets)))
        elif kind == "hard":
            out.append(hard(name, rng.choice([*targets, _name(rng), "../outside/secret"])))
        else:
            out.append(entry(name, tarfile.FIFOTYPE))
    return out


@pytest.mark.parametrize("whiteouts", [Whiteouts.DELETE, Whiteouts.OCI])
def test_random_hostile_layers_never_touch_the_outside(tmp_path: Path, whiteouts: Whiteouts) -> None:
    rng = random.Random(5)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    os.symlink("/", outside / "hostroot")
    lower = tmp_path / "lower"
    lower.mkdir()
    os.symlink("../../outside", lower / "esc")  # a hostile symlink in a layer below
    os.symlink(str(outside), lower / "abs")
    before = tree(outside)
    siblings = {"outside", "lower", "root", "layer.blob"}
    applied = refused = 0
    for _ in range(300):
        root = tmp_path / "root"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        blob = write_layer(tmp_path / "layer.blob", _layer(rng, outside))
        try:
            apply_layer(root, blob, whiteouts, lowers=[lower] if whiteouts is Whiteouts.OCI else None)
            applied += 1
        except LayerError as e:
            assert "\n" not in str(e)
            refused += 1
        assert tree(outside) == before
        assert set(os.listdir(tmp_path)) == siblings
        assert os.stat(outside / "secret").st_nlink == 1
    assert applied > 30 and refused > 30, (applied, refused)  # the generator really produces both kinds
