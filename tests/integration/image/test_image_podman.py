"""podman as the oracle: what pallet saves podman loads with the same files, and the reverse."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.image.cliutil import CLI, exported_tree
from tests.unit.image.tarutil import tree

pytestmark = [
    pytest.mark.root,
    pytest.mark.compat,
    pytest.mark.skipif(not shutil.which("podman"), reason="no podman"),
]


class Podman:
    def __init__(self, base: Path) -> None:
        self.argv = [
            "podman",
            "--root",
            str(base / "root"),
            "--runroot",
            str(base / "run"),
            "--storage-driver",
            "vfs",
        ]

    def __call__(self, *args: str) -> str:
        p = subprocess.run([*self.argv, *args], capture_output=True, text=True)
        assert p.returncode == 0, f"podman {' '.join(args)}: {p.stderr}"
        return p.stdout


@pytest.fixture
def cli(workdir: Path, leakcheck: None) -> Iterator[CLI]:
    c = CLI(workdir / "root")
    try:
        yield c
    finally:
        c.unmount_all()


def test_pallet_and_podman_exchange_images(cli: CLI, busybox_rootfs: Path, workdir: Path) -> None:
    podman = Podman(workdir / "podman")
    rootfs_tar = workdir / "rootfs.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(rootfs_tar), "."], check=True)
    cli("import", str(rootfs_tar), "bb:base")
    cli("snapshot", "prepare", "work", "bb:base")
    root = cli.mount("work", workdir / "mnt")
    (root / "etc/group").unlink()
    (root / "etc/motd").write_text("from pallet\n")
    cli.unmount_all()
    cli("commit", "work", "bb:two")
    want = exported_tree(cli, "bb:two", "check", workdir / "want")
    assert "etc/group" not in want and "etc/motd" in want

    for fmt in ("docker-archive", "oci-archive"):
        cli("save", "--format", fmt, "-o", str(workdir / f"{fmt}.tar"), "bb:two")
        name = podman("load", "-q", "-i", str(workdir / f"{fmt}.tar")).strip().split()[-1]
        path = podman("image", "mount", name).strip()
        try:
            assert tree(Path(path)) == want, fmt
        finally:
            podman("image", "unmount", name)
        podman("save", "--format", fmt, "-o", str(workdir / f"podman-{fmt}.tar"), name)
        back = CLI(workdir / f"back-{fmt}")
        back.mounts = cli.mounts
        out = back("load", "-i", str(workdir / f"podman-{fmt}.tar")).stdout
        image = out.split()[-1]
        assert exported_tree(back, image, "x", workdir / f"back-{fmt}-tree") == want
