"""Whiteouts: the names a layer uses to delete (``.wh.<name>``) and to make a directory opaque, and how
a snapshotter records them on disk.

Kept apart from layers.py (tarfile, gzip, hashlib) so that the snapshotters, and with them
``pallet run``, load none of the unpacking machinery they do not use.
"""

from __future__ import annotations

import enum

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"


class Whiteouts(enum.Enum):
    DELETE = "delete"
    OVERLAY = "overlay"
    OCI = "oci"
