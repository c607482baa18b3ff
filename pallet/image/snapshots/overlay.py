"""The overlay snapshotter: each snapshot is an upper directory; parents become lowerdirs.

Mount options name each layer as ``<root>/snapshots/<id>/fs``; ``pallet.image.mount`` shortens them
to relative paths when many layers would pass the one-page limit of mount(2)'s data argument.
"""

from __future__ import annotations

import os
from pathlib import Path

from pallet.image.snapshots import ACTIVE, VIEW, Mount, Snapshotter
from pallet.image.whiteouts import Whiteouts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pallet.image.diff import Change

# overlayfs refuses more lower layers than this (OVL_MAX_STACK in fs/overlayfs/params.h)
MAX_LOWERS = 500


class OverlaySnapshotter(Snapshotter):
    name = "overlayfs"
    whiteouts = Whiteouts.OVERLAY
    mount_type = "overlay"

    def _extra_options(self) -> list[str]:
        # index=on ties an upper to one set of lowers; layers are shared, so keep it off where it exists
        return ["index=off"] if os.path.exists("/sys/module/overlay/parameters/index") else []

    def _mounts(self, kind: str, ids: list[int]) -> list[Mount]:
        sid, parents = ids[0], ids[1:]
        if len(parents) > MAX_LOWERS:
            raise OSError(f"snapshot has {len(parents)} parent layers; overlay stacks at most {MAX_LOWERS}")
        if not parents:
            return [Mount("bind", str(self._fs(sid)), ["rbind", "ro" if kind == VIEW else "rw"])]
        if kind == VIEW and len(parents) == 1:
            return [Mount("bind", str(self._fs(parents[0])), ["rbind", "ro"])]
        lower = "lowerdir=" + ":".join(str(self._fs(p)) for p in parents)
        if kind == ACTIVE:
            opts = [f"upperdir={self._fs(sid)}", f"workdir={self._dir(sid) / 'work'}", lower]
        else:
            opts = [lower]
        return [Mount(self.mount_type, "overlay", opts + self._extra_options())]

    def changes(self, key: str) -> tuple[Path, list[Change]]:
        from pallet.image.diff import overlay_changes  # tarfile: for commit and diff only

        ids = self.meta.ids(key)
        return self._fs(ids[0]), overlay_changes(self._fs(ids[0]), [self._fs(p) for p in ids[1:]])
