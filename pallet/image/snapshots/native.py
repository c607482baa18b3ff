"""The native snapshotter: every snapshot is a full copy of its parent, mounted with a bind.

For filesystems overlay cannot sit on (or be stacked over). ``cp -a --reflink=auto`` keeps hardlinks,
xattrs, devices and ownership and shares extents where the filesystem can.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pallet.errors import Internal
from pallet.image.diff import Change, dir_changes
from pallet.image.snapshots import VIEW, Mount, Snapshotter
from pallet.image.whiteouts import Whiteouts


class NativeSnapshotter(Snapshotter):
    name = "native"
    whiteouts = Whiteouts.DELETE

    def _populate(self, new: Path, parent_ids: list[int], kind: str) -> None:
        if not parent_ids:
            return
        src = self._fs(parent_ids[0])
        r = subprocess.run(
            ["cp", "-a", "--reflink=auto", f"{src}/.", str(new / "fs")], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise Internal(f"native snapshot: copying {src}: {r.stderr.strip()}")

    def _mounts(self, kind: str, ids: list[int]) -> list[Mount]:
        return [Mount("bind", str(self._fs(ids[0])), ["rbind", "ro" if kind == VIEW else "rw"])]

    def lower_dirs(self, key: str) -> list[Path]:
        return []

    def changes(self, key: str) -> tuple[Path, list[Change]]:
        ids = self.meta.ids(key)
        return self._fs(ids[0]), dir_changes(self._fs(ids[1]) if len(ids) > 1 else None, self._fs(ids[0]))
