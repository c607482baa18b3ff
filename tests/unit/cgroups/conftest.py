"""Fixtures for the cgroup unit tests: a fake cgroupfs per version (pallet_cgroupfs_fake.py) with its
kernel-like mkdir/rmdir put in place of the drivers' own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pallet_cgroupfs_fake import FakeCgroupFS

from pallet.runtime.cgroups import common


@pytest.fixture
def fake_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFS:
    fs = FakeCgroupFS(tmp_path / "cgroup-v1", 1)
    monkeypatch.setattr(common, "mkdir", fs.mkdir)
    monkeypatch.setattr(common, "rmdir", fs.rmdir)
    return fs


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCgroupFS:
    fs = FakeCgroupFS(tmp_path / "cgroup-v2", 2)
    monkeypatch.setattr(common, "mkdir", fs.mkdir)
    monkeypatch.setattr(common, "rmdir", fs.rmdir)
    return fs


@pytest.fixture
def proc_cgroup(tmp_path: Path) -> Iterator[Any]:
    """Write a fake /proc/self/cgroup; returns a function taking its text and giving its path."""

    def make(text: str) -> str:
        p = tmp_path / "proc-self-cgroup"
        p.write_text(text)
        return str(p)

    yield make
