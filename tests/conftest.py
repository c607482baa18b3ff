"""Fixtures shared by every test height: unique names, temporary roots, a busybox bundle, leak checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.leaks import find_leaks
from tests.helpers.rootfs import busybox_available, make_busybox_rootfs

IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(skip_root)


@pytest.fixture
def token() -> str:
    """A name unique to this test; every id, path and link it makes carries it, so leaks can be found."""
    return "pallet-t" + uuid.uuid4().hex[:10]


@pytest.fixture
def workdir(token: str) -> Iterator[Path]:
    """A temporary directory whose path carries the test's token."""
    d = Path("/tmp") / token
    d.mkdir(mode=0o755)
    yield d
    subprocess.run(["umount", "-R", "-l", str(d)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not busybox_available():
        pytest.skip("busybox-static is not installed")
    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


def runtime_cmd() -> list[str]:
    exe = VENV_BIN / "pallet-runtime"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pallet.cli.runtime"]


@pytest.fixture
def bundle(workdir: Path, busybox_rootfs: Path) -> Path:
    """An OCI bundle with a copy of the busybox rootfs and `pallet-runtime spec`'s config."""
    b = workdir / "bundle"
    b.mkdir()
    shutil.copytree(busybox_rootfs, b / "rootfs", symlinks=True)
    subprocess.run(runtime_cmd() + ["spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["terminal"] = False
    (b / "config.json").write_text(json.dumps(cfg, indent=2))
    return b


@pytest.fixture
def leakcheck(token: str) -> Iterator[None]:
    """Fails the test if anything naming its token outlives it (mounts, cgroups, netns, processes)."""
    yield
    leaks = find_leaks(token)
    if leaks:
        # clean up so that one failure does not cascade, then fail loudly
        for line in leaks:
            if line.startswith("process"):
                pid = int(line.split()[1].rstrip(":"))
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        pytest.fail("leaked: " + "; ".join(leaks))
