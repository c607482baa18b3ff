"""fuse-overlayfs for rootless use where the kernel's overlay cannot be mounted in a user namespace.

Same layout as the overlay snapshotter; layers keep their ``.wh.`` whiteout files, which
fuse-overlayfs reads, because an unprivileged user cannot make 0/0 devices or trusted xattrs.
"""

from __future__ import annotations

from pallet.image.snapshots.overlay import OverlaySnapshotter
from pallet.image.whiteouts import Whiteouts


class FuseOverlaySnapshotter(OverlaySnapshotter):
    name = "fuse-overlayfs"
    whiteouts = Whiteouts.OCI
    mount_type = "fuse3.fuse-overlayfs"

    def _extra_options(self) -> list[str]:
        return []
