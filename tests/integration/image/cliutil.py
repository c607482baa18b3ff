"""Running the pallet CLI on its own --root in root tests, and mounting its snapshots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.image.tarutil import tree

PALLET = [sys.executable, "-m", "pallet.cli.main"]


class CLI:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounts: list[Path] = []

    def __call__(
        self, *args: str, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*PALLET, "--root", str(self.root), "--runroot", str(self.root / "run"), *args]
        p = subprocess.run(
            cmd, capture_output=True, input=stdin.decode("latin-1") if stdin else None, text=True
        )
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: rc={p.returncode}\n{p.stderr}")
        return p

    def mount(self, key: str, target: Path) -> Path:
        target.mkdir()
        self("snapshot", "mount", key, str(target))
        self.mounts.append(target)
        return target

    def unmount_all(self) -> None:
        for t in reversed(self.mounts):
            self("snapshot", "unmount", str(t), check=False)
        self.mounts.clear()


def exported_tree(cli: CLI, image: str, key: str, dest: Path) -> dict[str, str]:
    """Prepare a snapshot of ``image``, export it with pallet, unpack the tar with GNU tar."""
    cli("snapshot", "prepare", key, image)
    cli("export", "-o", str(dest.with_suffix(".tar")), key)
    dest.mkdir()
    subprocess.run(["tar", "-C", str(dest), "-xf", str(dest.with_suffix(".tar"))], check=True)
    return tree(dest)
