"""User namespace mappings that an unprivileged runtime may ask for, checked before anything is made.

Without root, a map can only name the caller's own uid (written directly, one id) or ranges that
/etc/subuid and /etc/subgid grant the caller (written by the setuid newuidmap/newgidmap of Debian's
`uidmap`). Anything else the kernel or newuidmap refuses half-way through create; here it is one clear
error naming the mapping, as rootless runc and podman do.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from pallet.errors import FailedPrecondition, InvalidArgument


def subordinate_ranges(path: str, name: str, uid: int) -> list[tuple[int, int]]:
    """(start, count) of every line of /etc/subuid or /etc/subgid for this user (by name or number)."""
    out: list[tuple[int, int]] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)):
                    try:
                        out.append((int(parts[1]), int(parts[2])))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return out


def check_rootless_mappings(linux: dict[str, Any]) -> None:
    """Refuse, as an unprivileged caller, any mapping that is neither our own id nor subordinate to us."""
    if os.geteuid() == 0:
        return
    import pwd

    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    for kind, key, own, path in (
        ("uid", "uidMappings", uid, "/etc/subuid"),
        ("gid", "gidMappings", os.getegid(), "/etc/subgid"),
    ):
        maps = linux.get(key) or []
        ranges = [(own, 1), *subordinate_ranges(path, name, uid)]
        for i, m in enumerate(maps):
            lo, hi = m["hostID"], m["hostID"] + m["size"]
            if not any(s <= lo and hi <= s + n for s, n in ranges):
                raise InvalidArgument(
                    f"config.json: linux.{key}[{i}]: host {kind}s {lo}-{hi - 1} are neither yours ({own}) "
                    f"nor granted to {name} in {path}"
                )
        simple = len(maps) == 1 and maps[0]["hostID"] == own and maps[0]["size"] == 1
        if maps and not simple and shutil.which(f"new{kind}map") is None:
            raise FailedPrecondition(
                f"config.json: linux.{key}: more than your own {kind} needs new{kind}map (Debian: uidmap)"
            )
