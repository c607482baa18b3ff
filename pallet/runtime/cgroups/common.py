"""What both cgroup drivers share: the error type, file access that names the file, path rules,
the checks on ``linux.resources`` and the v1 → v2 value conversions (runc's and crun's).
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import time
from collections.abc import Iterable, Iterator

from pallet.errors import FailedPrecondition, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any


class CgroupError(FailedPrecondition):
    """A cgroup could not be created, configured, frozen, read or removed."""


class CgroupValueError(CgroupError, InvalidArgument):
    """A ``linux.resources`` value is malformed, out of range, or refused by the kernel (EINVAL)."""


# -- files ------------------------------------------------------------------------------------------


def write_file(directory: str, name: str, value: str, what: str) -> None:
    """Write ``value`` to ``directory/name`` in one write(2), as the kernel wants cgroup files written.

    No O_CREAT: a missing file means the controller or the feature is absent, and must say so.
    """
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        if e.errno == errno.ENOENT:
            reason = "no such file (the controller or feature is not available)"
        kind = CgroupValueError if e.errno in (errno.EINVAL, errno.ERANGE) else CgroupError
        raise kind(f"cgroup {what}: cannot set {name} to {value}: {reason.lower()}") from e


def read_file(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read()


def read_optional(directory: str, name: str) -> str | None:
    try:
        return read_file(directory, name)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_int(directory: str, name: str, default: int = 0) -> int:
    """An integer file; "max" reads as ``default`` (no limit), a missing file as ``default``."""
    text = read_optional(directory, name)
    if text is None:
        return default
    text = text.strip()
    if text in ("", "max"):
        return default
    return int(text)


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line: memory.stat, cpu.stat, memory.events)."""
    out: dict[str, int] = {}
    text = read_optional(directory, name) or ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def read_psi(directory: str, name: str) -> dict[str, dict[str, float | int]] | None:
    """A pressure file (``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``) in runc's PSIStats shape."""
    text = read_optional(directory, name)
    if text is None:
        return None
    out: dict[str, dict[str, float | int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        data: dict[str, float | int] = {}
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            data[k] = int(v) if k == "total" else float(v)
        out[parts[0]] = data
    return out


def procs_in(directory: str) -> list[int]:
    """The processes of one cgroup (not its children); an absent cgroup has none."""
    text = read_optional(directory, "cgroup.procs") or ""
    return [int(x) for x in text.split()]


def walk_dirs(directory: str) -> Iterator[str]:
    """``directory`` and every cgroup below it, deepest first (the order rmdir needs)."""
    if not os.path.isdir(directory):
        return
    for dirpath, _dirs, _files in os.walk(directory, topdown=False):
        yield dirpath


def all_procs(directory: str) -> list[int]:
    pids: list[int] = []
    for d in walk_dirs(directory):
        pids.extend(procs_in(d))
    return sorted(set(pids))


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# os.mkdir and os.rmdir, named here so that unit tests can stand cgroupfs-like ones in for them: the
# kernel fills a new cgroup directory with its control files, and removes one with its files in it
mkdir = os.mkdir
rmdir = os.rmdir


def remove_tree(directory: str, what: str, timeout: float = 5.0) -> None:
    """rmdir a cgroup and its children, deepest first; EBUSY is retried while exiting tasks drain."""
    deadline = time.monotonic() + timeout
    for d in list(walk_dirs(directory)):
        while True:
            try:
                rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise CgroupError(
                    f"cgroup {what}: cannot remove {d}: {os.strerror(e.errno or 0).lower()}"
                ) from e


def wait_empty(directory: str, timeout: float) -> bool:
    """Wait until no process is left in the cgroup tree; a bounded wait on the kernel, not on a child."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while all_procs(directory):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


SIGKILL = int(signal.SIGKILL)


# -- paths ------------------------------------------------------------------------------------------


def clean_path(path: str) -> str:
    """runc's CleanPath: lexically clean; a relative path can never climb above its base with ``..``."""
    if not path:
        return ""
    if os.path.isabs(path):
        return os.path.normpath(path).replace("//", "/")
    return os.path.relpath(os.path.normpath(os.path.join("/", path)), "/")


def inner_path(cgroups_path: str | None, container_id: str) -> str:
    """The path below the hierarchy root (absolute) or below our own cgroup (relative).

    As runc: an empty cgroupsPath means a cgroup named after the container, relative to the
    runtime's own cgroup.
    """
    p = clean_path(cgroups_path or "")
    if p in ("", "."):
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise CgroupValueError(f"cgroup: invalid container id {container_id!r} for a cgroup name")
        return container_id
    if p == "/":
        raise CgroupValueError("cgroup: cgroupsPath / is the root of the hierarchy, not a container's cgroup")
    return p


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup → {controller: path}; v2's line is the "" key, named ones keep "name="."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
            continue
        for c in controllers.split(","):
            out[c] = path
    return out


# -- checks on linux.resources --------------------------------------------------------------------

_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PAGESIZE_RE = re.compile(r"^\d+(KB|MB|GB|TB|PB)$")
_KNOWN = {
    "devices",
    "memory",
    "cpu",
    "pids",
    "blockIO",
    "hugepageLimits",
    "network",
    "rdma",
    "unified",
}
_FIELDS = {
    "memory": {
        "limit",
        "reservation",
        "swap",
        "kernel",
        "kernelTCP",
        "swappiness",
        "disableOOMKiller",
        "useHierarchy",
        "checkBeforeUpdate",
    },
    "cpu": {
        "shares",
        "quota",
        "burst",
        "period",
        "realtimeRuntime",
        "realtimePeriod",
        "cpus",
        "mems",
        "idle",
    },
    "pids": {"limit"},
    "blockIO": {
        "weight",
        "leafWeight",
        "weightDevice",
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    },
    "network": {"classID", "priorities"},
}


def _bad(field: str, why: str, value: Any) -> CgroupValueError:
    return CgroupValueError(f"cgroup: linux.resources.{field}: {why}, not {value!r}")


def _int(d: dict[str, Any], key: str, field: str, lo: int | None = None, hi: int | None = None) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{field}.{key}", "must be an integer", v)
    if lo is not None and v < lo:
        raise _bad(f"{field}.{key}", f"must be at least {lo}", v)
    if hi is not None and v > hi:
        raise _bad(f"{field}.{key}", f"must be at most {hi}", v)
    return v


def _limit(d: dict[str, Any], key: str, field: str) -> None:
    """A byte limit: -1 (unlimited), 0 (unset) or positive."""
    _int(d, key, field, lo=-1)


def _dict(parent: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    v = parent.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(field, "must be an object", v)
    return v


def _list(parent: dict[str, Any], key: str, field: str) -> list[dict[str, Any]]:
    v = parent.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise _bad(field, "must be a list of objects", v)
    return v


def check_cpuset(value: Any, field: str) -> None:
    if not isinstance(value, str):
        raise _bad(field, "must be a string", value)
    if value == "":
        return
    if not _CPUSET_RE.match(value):
        raise _bad(field, "must be a list like 0-3,5", value)
    for part in value.split(","):
        a, _, b = part.partition("-")
        if b and int(b) < int(a):
            raise _bad(field, f"range {part} goes backwards", value)


def validate_resources(res: Any) -> None:
    """Reject malformed ``linux.resources`` before anything is created or written."""
    if res is None:
        return
    if not isinstance(res, dict):
        raise CgroupValueError(f"cgroup: linux.resources: must be an object, not {res!r}")
    for key in res:
        if key not in _KNOWN:
            raise CgroupValueError(f"cgroup: unknown field linux.resources.{key}")
    for section, fields in _FIELDS.items():
        sec = _dict(res, section, section)
        for key in sec:
            if key not in fields:
                raise CgroupValueError(f"cgroup: unknown field linux.resources.{section}.{key}")

    mem = _dict(res, "memory", "memory")
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        _limit(mem, key, "memory")
    _int(mem, "swappiness", "memory", lo=0, hi=100)
    for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        if key in mem and mem[key] is not None and not isinstance(mem[key], bool):
            raise _bad(f"memory.{key}", "must be true or false", mem[key])
    limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
    if limit > 0 and swap > 0 and swap < limit:
        raise _bad("memory.swap", f"memory+swap must be at least the memory limit {limit}", swap)

    cpu = _dict(res, "cpu", "cpu")
    _int(cpu, "shares", "cpu", lo=0)
    _int(cpu, "quota", "cpu", lo=-1)
    _int(cpu, "burst", "cpu", lo=0)
    _int(cpu, "period", "cpu", lo=0)
    _int(cpu, "realtimeRuntime", "cpu", lo=-1)
    _int(cpu, "realtimePeriod", "cpu", lo=0)
    _int(cpu, "idle", "cpu", lo=0, hi=1)
    for key in ("cpus", "mems"):
        if cpu.get(key) is not None:
            check_cpuset(cpu[key], f"cpu.{key}")

    _int(_dict(res, "pids", "pids"), "limit", "pids")

    bio = _dict(res, "blockIO", "blockIO")
    for key in ("weight", "leafWeight"):
        w = _int(bio, key, "blockIO", lo=0, hi=1000)
        if w is not None and 0 < w < 10:
            raise _bad(f"blockIO.{key}", "must be 0 or between 10 and 1000", w)
    for i, dev in enumerate(_list(bio, "weightDevice", "blockIO.weightDevice")):
        f = f"blockIO.weightDevice[{i}]"
        _device_numbers(dev, f)
        for key in ("weight", "leafWeight"):
            w = _int(dev, key, f, lo=0, hi=1000)
            if w is not None and 0 < w < 10:
                raise _bad(f"{f}.{key}", "must be 0 or between 10 and 1000", w)
    for kind in (
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    ):
        for i, dev in enumerate(_list(bio, kind, f"blockIO.{kind}")):
            f = f"blockIO.{kind}[{i}]"
            _device_numbers(dev, f)
            if _int(dev, "rate", f, lo=0) is None:
                raise _bad(f"{f}.rate", "is required", None)

    for i, hp in enumerate(_list(res, "hugepageLimits", "hugepageLimits")):
        f = f"hugepageLimits[{i}]"
        if not isinstance(hp.get("pageSize"), str) or not _PAGESIZE_RE.match(hp["pageSize"]):
            raise _bad(f"{f}.pageSize", "must be a size like 2MB or 1GB", hp.get("pageSize"))
        if _int(hp, "limit", f, lo=0) is None:
            raise _bad(f"{f}.limit", "is required", None)

    net = _dict(res, "network", "network")
    _int(net, "classID", "network", lo=0, hi=2**32 - 1)
    for i, prio in enumerate(_list(net, "priorities", "network.priorities")):
        name = prio.get("name")
        if not isinstance(name, str) or not name or "/" in name or " " in name:
            raise _bad(f"network.priorities[{i}].name", "must be an interface name", name)
        _int(prio, "priority", f"network.priorities[{i}]", lo=0, hi=2**32 - 1)

    rdma = _dict(res, "rdma", "rdma")
    for rdev, lim in rdma.items():
        if not isinstance(lim, dict):
            raise _bad(f"rdma.{rdev}", "must be an object", lim)
        _int(lim, "hcaHandles", f"rdma.{rdev}", lo=0, hi=2**32 - 1)
        _int(lim, "hcaObjects", f"rdma.{rdev}", lo=0, hi=2**32 - 1)

    for key, value in _dict(res, "unified", "unified").items():
        if "/" in key or "." not in key or key.startswith("."):
            raise _bad("unified", "keys must be file names like memory.high", key)
        if not isinstance(value, str):
            raise _bad(f"unified.{key}", "must be a string", value)

    from pallet.runtime.cgroups.devices import check_rules  # noqa: PLC0415 - small module, only when needed

    if res.get("devices") is not None:
        if not isinstance(res["devices"], list):
            raise _bad("devices", "must be a list", res["devices"])
        check_rules(res["devices"])


def _device_numbers(dev: dict[str, Any], field: str) -> None:
    for key in ("major", "minor"):
        if dev.get(key) is None:
            raise _bad(f"{field}.{key}", "is required", None)
        _int(dev, key, field, lo=0)


def wanted_controllers(res: dict[str, Any]) -> dict[str, str]:
    """v1 controller → the field that needs it, for the fields that would write something; checked
    before the first write, so that a missing controller fails the whole set with nothing changed."""

    def some(d: Any) -> bool:
        return isinstance(d, dict) and any(v not in (None, 0, False, "", [], {}) for v in d.values())

    out: dict[str, str] = {}
    cpu = res.get("cpu") or {}
    if cpu.get("cpus") or cpu.get("mems"):
        out["cpuset"] = "cpu.cpus"
    if some({k: v for k, v in cpu.items() if k not in ("cpus", "mems")}) or cpu.get("idle") is not None:
        out["cpu"] = "cpu"
    if some(res.get("memory")):
        out["memory"] = "memory"
    if (res.get("pids") or {}).get("limit"):
        out["pids"] = "pids"
    if some(res.get("blockIO")):
        out["blkio"] = "blockIO"
    if res.get("hugepageLimits"):
        out["hugetlb"] = "hugepageLimits"
    net = res.get("network") or {}
    if net.get("classID") is not None:
        out["net_cls"] = "network.classID"
    if net.get("priorities"):
        out["net_prio"] = "network.priorities"
    if res.get("rdma"):
        out["rdma"] = "rdma"
    return out


# -- conversions ------------------------------------------------------------------------------------


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] → cpu.weight [1, 10000], crun's curve: 1024 (the default) → 100."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10**exponent))


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] → io.weight [1, 10000], runc's linear map."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_v1_to_v2(swap: int, memory: int) -> int:
    """OCI's memory.swap is memory+swap (v1 memsw); v2's memory.swap.max is swap alone.

    Returns -1 for "max", 0 for "leave alone", else the swap-only bytes (runc's rules).
    """
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise CgroupValueError("cgroup: linux.resources.memory.swap: a swap limit needs a memory limit")
    if swap < memory:
        raise CgroupValueError(
            f"cgroup: linux.resources.memory.swap: memory+swap {swap} is below the memory limit {memory}"
        )
    return swap - memory
