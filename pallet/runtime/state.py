"""A container's on-disk state under the runtime root, and its status derived from the kernel.

Layout: ``<root>/<id>/state.json`` (replaced atomically by rename), ``<root>/<id>/exec.fifo`` while the init waits
for `start`, ``<root>/<id>/lock`` (flock) to serialise runtime commands on one container.

Status is never trusted from the file alone (runc does the same): the init's pid plus its start time
(field 22 of /proc/PID/stat) identify the process, so a reused pid reads as "stopped"; the fifo tells
created from running; the freezer tells paused.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from pallet.errors import AlreadyExists, Conflict, NotFound
from pallet.oci.runtime_spec import OCI_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CREATING, CREATED, RUNNING, PAUSED, STOPPED = "creating", "created", "running", "paused", "stopped"


class State:
    """What the runtime records about one container (plain class: dataclasses cost ~3 ms to import)."""

    FIELDS = (
        "id", "bundle", "rootfs", "pid", "pid_start", "created", "owner", "annotations", "cgroups_path",
        "cgroup_paths", "systemd_cgroup", "rootless", "status", "config",
    )  # fmt: skip

    def __init__(
        self,
        id: str,
        bundle: str,
        rootfs: str,
        pid: int = 0,
        pid_start: int = 0,
        created: str = "",
        owner: str = "",
        annotations: dict[str, str] | None = None,
        cgroups_path: str | None = None,
        cgroup_paths: dict[str, str] | None = None,
        systemd_cgroup: bool = False,
        rootless: bool = False,
        status: str = CREATING,  # last recorded; Runtime.status gives the live one
        config: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.rootfs = rootfs
        self.pid = pid
        self.pid_start = pid_start
        self.created = created
        self.owner = owner
        self.annotations: dict[str, str] = annotations or {}
        self.cgroups_path = cgroups_path
        self.cgroup_paths: dict[str, str] = cgroup_paths or {}
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless
        self.status = status
        self.config: dict[str, Any] = config or {}

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def oci_state(self, status: str) -> dict[str, Any]:
        """runc's `state` JSON: the OCI state plus rootfs, created and owner."""
        out: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status not in (STOPPED,) else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def proc_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot, or None if there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parens: split after the last ')'
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


class StateDir:
    """One container's directory under the runtime root."""

    def __init__(self, root: str, container_id: str) -> None:
        self.root = root
        self.id = container_id
        self.path = os.path.join(root, container_id)
        self.fifo = os.path.join(self.path, "exec.fifo")
        self._lock_fd: int | None = None

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.path, "state.json"))

    def create(self) -> None:
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            raise AlreadyExists(f"container {self.id!r}: already exists") from None

    def lock(self) -> None:
        """Take the container's lock (blocking), so two runtime commands never interleave on it."""
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> State:
        try:
            with open(os.path.join(self.path, "state.json")) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"container {self.id!r}: does not exist") from None
        except ValueError as e:
            raise Conflict(f"container {self.id!r}: state file is corrupt: {e}") from None
        return State(**data)

    def save(self, st: State) -> None:
        tmp = os.path.join(self.path, ".state.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        # rename makes the update atomic for concurrent readers; no fsync: runtime state describes
        # processes, and after a power loss there are none left to describe (runc does the same)
        with os.fdopen(fd, "w") as f:
            # dumps, not dump: json.dump encodes in Python (only dumps uses the C encoder), ~0.3 ms
            # of the ~12 KB state, saved four times by a create and start; the text is the same
            f.write(json.dumps(st.to_dict()))
        os.rename(tmp, os.path.join(self.path, "state.json"))

    def remove(self) -> None:
        for name in ("state.json", ".state.json.tmp", "exec.fifo", "lock"):
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.exists(os.path.join(root, n, "state.json")))
