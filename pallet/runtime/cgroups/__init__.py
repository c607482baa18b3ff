"""cgroup manager: one interface, a v1 and a v2 driver chosen by looking at the cgroup root.

    mgr = open_manager(config_cgroups_path, container_id)
    mgr.apply(pid); mgr.set(resources); mgr.freeze(); mgr.thaw(); mgr.stats(); mgr.destroy()

``apply(0)`` makes the directories only; ``placement()`` then says how a new process gets in without
a write to cgroup.procs, whose lock costs an RCU grace period (runtime/launcher.py).

``open_manager`` only computes paths, so a later command re-opens the same manager from the same
arguments; nothing exists on disk until ``apply``. Path rules are runc's: an absolute cgroupsPath is
used as is under each hierarchy; a relative one (and the default, the container id) lives below the
runtime's own cgroup (on v2 below its parent, which is the one that can have children).
"""

from __future__ import annotations

import os

from pallet.runtime.cgroups.common import (
    CgroupError,
    CgroupValueError,
    inner_path,
    parse_proc_cgroup,
    validate_resources,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: the Protocol is for mypy only
    from typing import Any, Protocol
else:
    Protocol = object

__all__ = [
    "CgroupError",
    "CgroupValueError",
    "Manager",
    "open_manager",
    "validate_resources",
    "is_v2",
    "watch_oom",
]


def watch_oom(mgr: Manager) -> Any:
    """An OOMWatcher (oom.py) for ``events``: ``wait(timeout)`` returns new OOM events, ``gone`` ends it."""
    from pallet.runtime.cgroups.oom import OOMWatcher  # noqa: PLC0415 - only the events command needs it

    return OOMWatcher(mgr)


class Manager(Protocol):
    """What the runtime calls; V1Manager and V2Manager implement it."""

    version: int
    paths: dict[str, str]
    rootless: bool

    def apply(self, pid: int) -> None: ...
    def placement(self) -> tuple[str | None, list[str]]: ...
    def set(self, resources: dict[str, Any]) -> None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def frozen(self) -> bool: ...
    def pids(self) -> list[int]: ...
    def kill_all(self, sig: int) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def exists(self) -> bool: ...
    def destroy(self) -> None: ...


def is_v2(root: str = "/sys/fs/cgroup") -> bool:
    """Pure v2 when the root itself is a cgroup2 mount (only a cgroup2 root has cgroup.controllers)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def systemd_running() -> bool:
    """sd_booted(3): systemd as PID 1 creates /run/systemd/system."""
    return os.path.isdir("/run/systemd/system")


def open_manager(
    cgroups_path: str | None,
    container_id: str,
    *,
    systemd: bool = False,
    rootless: bool = False,
    root: str = "/sys/fs/cgroup",
    proc_cgroup: str = "/proc/self/cgroup",
) -> Manager:
    """The manager for a container's cgroup; creates nothing (``apply`` does)."""
    if systemd:
        if not systemd_running():
            raise CgroupError("systemd cgroup driver: systemd is not running (use the cgroupfs driver)")
        raise CgroupError(
            "systemd cgroup driver: not supported by pallet-runtime yet (use the cgroupfs driver)"
        )
    inner = inner_path(cgroups_path, container_id)
    own: dict[str, str] = {}
    if not os.path.isabs(inner):
        try:
            with open(proc_cgroup) as f:
                own = parse_proc_cgroup(f.read())
        except OSError as e:
            raise CgroupError(f"cgroup: cannot read {proc_cgroup}: {e.strerror}") from e
    if is_v2(root):
        from pallet.runtime.cgroups.v2 import V2Manager  # noqa: PLC0415 - load only the driver in use

        if os.path.isabs(inner):
            path = os.path.join(root, inner.lstrip("/"))
        else:
            # our own cgroup most likely holds processes, so it cannot have controller-using children
            base = os.path.dirname(own.get("", "/"))
            path = os.path.join(root, base.lstrip("/"), inner)
        return V2Manager(root, os.path.normpath(path), rootless=rootless)
    from pallet.runtime.cgroups.v1 import V1Manager  # noqa: PLC0415

    return V1Manager(root, inner, own, rootless=rootless)


def reopen_manager(paths: dict[str, str], *, rootless: bool = False, root: str = "/sys/fs/cgroup") -> Manager:
    """The manager of a cgroup placed earlier, from the paths its ``apply`` produced.

    Later commands (kill, pause, delete) use this rather than ``open_manager``: a relative
    cgroupsPath resolves against the caller's own cgroup, which may differ between commands.
    """
    if is_v2(root):
        from pallet.runtime.cgroups.v2 import V2Manager  # noqa: PLC0415

        return V2Manager(root, paths[""], rootless=rootless)
    from pallet.runtime.cgroups.v1 import V1Manager  # noqa: PLC0415

    mgr = V1Manager(root, "/", {}, rootless=rootless)
    mgr.paths = dict(paths)
    return mgr
