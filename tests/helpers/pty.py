"""Reading a pty master in tests."""

from __future__ import annotations

import os


def read_pty(fd: int, until: bytes | None = None) -> bytes:
    """Everything the other side writes until it closes (EIO on a pty), or until `until` appears."""
    out = b""
    while until is None or until not in out:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out
