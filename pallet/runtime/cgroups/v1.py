"""The cgroup v1 driver: one directory per mounted controller hierarchy (cpu, memory, pids, …).

In hybrid mode (a cgroup2 mount at ``<root>/unified`` beside the v1 hierarchies) the process also
joins the same path there, as runc does: that tree has no controllers but gives systemd and others
one place to see the container.
"""

from __future__ import annotations

import errno
import os
import time

from pallet.runtime.cgroups import common
from pallet.runtime.cgroups import devices as devrules
from pallet.runtime.cgroups.common import (
    SIGKILL,
    CgroupError,
    CgroupValueError,
    all_procs,
    parse_proc_cgroup,
    read_file,
    read_int,
    read_keyed,
    read_optional,
    remove_tree,
    signal_all,
    validate_resources,
    wait_empty,
    wanted_controllers,
    write_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
)
_UNLIMITED_V1 = 0x7FFFFFFFFFFFF000  # memory.limit_in_bytes with no limit (PAGE_COUNTER_MAX pages)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _mem(v: int) -> str:
    return "-1" if v < 0 else str(v)


class V1Manager:
    version = 1

    def __init__(self, root: str, inner: str, own: dict[str, str], *, rootless: bool = False) -> None:
        self.root = root
        self.rootless = rootless
        self.paths: dict[str, str] = {}
        self._skipped: set[str] = set()
        for c in CONTROLLERS:
            mount = os.path.join(root, c)
            if not os.path.isdir(mount):
                continue
            base = "/" if os.path.isabs(inner) else own.get(c, "/")
            self.paths[c] = os.path.normpath(os.path.join(mount, base.lstrip("/"), inner.lstrip("/")))
        unified = os.path.join(root, "unified")
        if os.path.exists(os.path.join(unified, "cgroup.controllers")):
            base = "/" if os.path.isabs(inner) else own.get("", "/")
            self.paths[""] = os.path.normpath(os.path.join(unified, base.lstrip("/"), inner.lstrip("/")))

    def __repr__(self) -> str:
        return f"V1Manager({self.paths!r})"

    def _dirs(self) -> list[str]:
        """Each directory once: co-mounted controllers (cpu,cpuacct) share one."""
        seen: dict[str, str] = {}
        for d in self.paths.values():
            seen.setdefault(os.path.realpath(d), d)
        return list(seen.values())

    def _path(self, controller: str, field: str) -> str:
        d = self.paths.get(controller)
        if d is None and controller in self._skipped:
            raise CgroupError(
                f"cgroup v1: rootless: cannot set linux.resources.{field}: the {controller} cgroup is not writable by this user"
            )
        if d is None:
            raise CgroupError(
                f"cgroup v1: cannot set linux.resources.{field}: the {controller} controller is not mounted"
            )
        return d

    # -- lifecycle ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.paths.values())

    def placement(self) -> tuple[str | None, list[str]]:
        """(the hybrid host's unified directory a process is born in with clone3, or None; the ``tasks``
        files it writes ``0`` to, once per directory: co-mounted controllers share one)."""
        unified = self.paths.get("")
        return unified, [os.path.join(d, "tasks") for d in self._dirs() if d != unified]

    def _mount(self, controller: str) -> str:
        return os.path.join(self.root, controller or "unified")

    def apply(self, pid: int) -> None:
        created: list[str] = []
        moved: list[str] = []
        origin = _proc_cgroup(pid)
        try:
            for c, d in list(self.paths.items()):
                try:
                    self._mkdir(c, d, created)
                    if pid > 0:
                        write_file(d, "cgroup.procs", str(pid), c or "unified")
                        moved.append(c)
                except (OSError, CgroupError) as e:
                    cause = e if isinstance(e, OSError) else e.__cause__
                    denied = isinstance(cause, OSError) and cause.errno in (
                        errno.EACCES,
                        errno.EPERM,
                        errno.EROFS,
                    )
                    if self.rootless and denied:
                        del self.paths[c]  # runc: a rootless container skips what it cannot write
                        self._skipped.add(c)
                        continue
                    if isinstance(e, CgroupError):
                        raise
                    raise CgroupError(
                        f"cgroup {c or 'unified'}: cannot create {d}: {os.strerror(e.errno or 0).lower()}"
                    ) from e
        except BaseException:
            # put the process back where it was, or the new cgroups cannot be removed
            for c in moved:
                back = os.path.join(self._mount(c), origin.get(c, "/").lstrip("/"))
                try:
                    write_file(back, "cgroup.procs", str(pid), c or "unified")
                except CgroupError:
                    pass
            for d in reversed(created):
                try:
                    common.rmdir(d)
                except OSError:
                    pass
            raise

    def _mkdir(self, controller: str, d: str, created: list[str]) -> None:
        # an empty parent may be removed under us (the engine drops its /pallet parent with its last
        # container): start again from what exists, a few times
        for attempt in range(3):
            missing: list[str] = []
            p = d
            while not os.path.isdir(p):
                missing.append(p)
                p = os.path.dirname(p)
            try:
                for m in reversed(missing):
                    try:
                        common.mkdir(m, 0o755)
                    except FileExistsError:
                        continue
                    created.append(m)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        if controller == "cpuset":
            self._init_cpuset(d)

    def _init_cpuset(self, d: str) -> None:
        """A new cpuset cgroup starts with no cpus and no mems, and takes no task until it has both:
        copy them down from the nearest ancestor that has them."""
        mount = os.path.join(self.root, "cpuset")
        chain = []
        p = d
        while os.path.realpath(p) != os.path.realpath(mount) and p != "/":
            chain.append(p)
            p = os.path.dirname(p)
        for cur in reversed(chain):
            parent = os.path.dirname(cur)
            for name in ("cpuset.cpus", "cpuset.mems"):
                mine = (read_optional(cur, name) or "").strip()
                if mine:
                    continue
                theirs = (read_optional(parent, name) or "").strip()
                if theirs:
                    write_file(cur, name, theirs, "cpuset")

    # -- resources ---------------------------------------------------------------------------------

    def set(self, resources: dict[str, Any]) -> None:
        validate_resources(resources)
        if not resources:
            return
        if resources.get("unified"):
            raise CgroupValueError("cgroup v1: linux.resources.unified needs cgroup v2")
        for controller, field in wanted_controllers(resources).items():
            self._path(controller, field)
        if resources.get("cpu"):
            self._set_cpu(resources["cpu"])
        if resources.get("memory"):
            self._set_memory(resources["memory"])
        pids = (resources.get("pids") or {}).get("limit")
        if pids:
            write_file(self._path("pids", "pids"), "pids.max", "max" if pids < 0 else str(pids), "pids")
        if resources.get("blockIO"):
            self._set_blkio(resources["blockIO"])
        for hp in resources.get("hugepageLimits") or []:
            d = self._path("hugetlb", "hugepageLimits")
            name = f"hugetlb.{hp['pageSize']}"
            write_file(d, name + ".limit_in_bytes", str(hp["limit"]), "hugetlb")
            if os.path.exists(os.path.join(d, name + ".rsvd.limit_in_bytes")):
                write_file(d, name + ".rsvd.limit_in_bytes", str(hp["limit"]), "hugetlb")
        net = resources.get("network") or {}
        if net.get("classID") is not None:
            write_file(
                self._path("net_cls", "network.classID"), "net_cls.classid", str(net["classID"]), "net_cls"
            )
        for prio in net.get("priorities") or []:
            d = self._path("net_prio", "network.priorities")
            write_file(d, "net_prio.ifpriomap", f"{prio['name']} {prio.get('priority', 0)}", "net_prio")
        for dev, lim in (resources.get("rdma") or {}).items():
            h, o = lim.get("hcaHandles"), lim.get("hcaObjects")
            line = f"{dev} hca_handle={'max' if h is None else h} hca_object={'max' if o is None else o}"
            write_file(self._path("rdma", "rdma"), "rdma.max", line, "rdma")
        if resources.get("devices") is not None:
            self._set_devices(resources["devices"])

    def _set_cpu(self, cpu: dict[str, Any]) -> None:
        if cpu.get("cpus"):
            write_file(self._path("cpuset", "cpu.cpus"), "cpuset.cpus", cpu["cpus"], "cpuset")
        if cpu.get("mems"):
            write_file(self._path("cpuset", "cpu.mems"), "cpuset.mems", cpu["mems"], "cpuset")
        keys = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod", "idle")
        if not any(cpu.get(k) is not None for k in keys):
            return
        d = self._path("cpu", "cpu")
        if cpu.get("shares"):
            write_file(d, "cpu.shares", str(cpu["shares"]), "cpu")
        _period_then_quota(
            d, "cpu.cfs_period_us", cpu.get("period") or 0, "cpu.cfs_quota_us", cpu.get("quota") or 0
        )
        if cpu.get("burst") is not None:
            write_file(d, "cpu.cfs_burst_us", str(cpu["burst"]), "cpu")
        _period_then_quota(
            d,
            "cpu.rt_period_us",
            cpu.get("realtimePeriod") or 0,
            "cpu.rt_runtime_us",
            cpu.get("realtimeRuntime") or 0,
        )
        if cpu.get("idle") is not None:
            write_file(d, "cpu.idle", str(cpu["idle"]), "cpu")

    def _set_memory(self, mem: dict[str, Any]) -> None:
        d = self._path("memory", "memory")
        limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
        has_swap = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
        if limit == -1 and swap == 0 and has_swap:
            swap = -1  # "unlimited memory" also lifts memory+swap (runc)
        if mem.get("checkBeforeUpdate") and limit > 0:
            usage = read_int(d, "memory.usage_in_bytes")
            if limit < usage:
                raise CgroupValueError(
                    f"cgroup memory: cannot set memory.limit_in_bytes to {limit}: below the current usage {usage}"
                )
        # the kernel keeps limit <= memsw limit at every step: raise memsw first when growing
        order = ["limit", "swap"]
        if limit and swap:
            current = read_int(d, "memory.limit_in_bytes", _UNLIMITED_V1)
            if swap == -1 or current < swap:
                order = ["swap", "limit"]
        for which in order:
            if which == "limit" and limit:
                try:
                    write_file(d, "memory.limit_in_bytes", _mem(limit), "memory")
                except CgroupError as e:
                    if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.EBUSY:
                        usage = read_int(d, "memory.usage_in_bytes")
                        raise CgroupValueError(
                            f"cgroup memory: cannot set memory.limit_in_bytes to {limit}: the current usage {usage} is higher"
                        ) from e
                    raise
            if which == "swap" and swap:
                write_file(d, "memory.memsw.limit_in_bytes", _mem(swap), "memory")
        if mem.get("reservation"):
            write_file(d, "memory.soft_limit_in_bytes", _mem(mem["reservation"]), "memory")
        if mem.get("kernelTCP"):
            write_file(d, "memory.kmem.tcp.limit_in_bytes", _mem(mem["kernelTCP"]), "memory")
        # memory.kmem.limit_in_bytes ("kernel") is deprecated and ignored by the kernel since 5.16; runc too
        if mem.get("swappiness") is not None:
            write_file(d, "memory.swappiness", str(mem["swappiness"]), "memory")
        if mem.get("disableOOMKiller"):
            write_file(d, "memory.oom_control", "1", "memory")

    def _set_blkio(self, bio: dict[str, Any]) -> None:
        d = self._path("blkio", "blockIO")
        # with BFQ as the scheduler, the weight files are blkio.bfq.* (CFQ is gone since 5.0)
        bfq = not os.path.exists(os.path.join(d, "blkio.weight")) and os.path.exists(
            os.path.join(d, "blkio.bfq.weight")
        )
        weight_file = "blkio.bfq.weight" if bfq else "blkio.weight"
        if bio.get("weight"):
            write_file(d, weight_file, str(bio["weight"]), "blkio")
        if bio.get("leafWeight"):
            write_file(d, "blkio.leaf_weight", str(bio["leafWeight"]), "blkio")
        for wd in bio.get("weightDevice") or []:
            dev = f"{wd['major']}:{wd['minor']}"
            if wd.get("weight"):
                write_file(d, weight_file + "_device", f"{dev} {wd['weight']}", "blkio")
            if wd.get("leafWeight"):
                write_file(d, "blkio.leaf_weight_device", f"{dev} {wd['leafWeight']}", "blkio")
        for key, name in (
            ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
            ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
            ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
            ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
        ):
            for td in bio.get(key) or []:
                write_file(d, name, f"{td['major']}:{td['minor']} {td['rate']}", "blkio")

    def _set_devices(self, rules: list[dict[str, Any]]) -> None:
        d = self.paths.get("devices")
        if d is None:
            if self.rootless:
                return  # runc: devices are not expected to work rootless
            raise CgroupError(
                "cgroup v1: cannot set linux.resources.devices: the devices controller is not mounted"
            )
        current = devrules.v1_parse_list(read_optional(d, "devices.list") or "")
        for name, line in devrules.v1_transition(current, devrules.v1_target(rules)):
            write_file(d, name, line, "devices")

    # -- freezer -----------------------------------------------------------------------------------

    def freeze(self) -> None:
        d = self._path("freezer", "freezer")
        deadline = time.monotonic() + 5.0
        delay = 0.001
        while True:
            # FREEZING can stick while a task sits in an uninterruptible sleep: write again (runc)
            write_file(d, "freezer.state", "FROZEN", "freezer")
            if read_file(d, "freezer.state").strip() == "FROZEN":
                return
            if time.monotonic() >= deadline:
                write_file(d, "freezer.state", "THAWED", "freezer")
                raise CgroupError(f"cgroup freezer: {d} did not freeze in time")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def thaw(self) -> None:
        write_file(self._path("freezer", "freezer"), "freezer.state", "THAWED", "freezer")

    def frozen(self) -> bool:
        d = self.paths.get("freezer")
        if d is None:
            return False
        return (read_optional(d, "freezer.state") or "").strip() == "FROZEN"

    # -- processes ---------------------------------------------------------------------------------

    def _procs_dir(self) -> str | None:
        for c in ("pids", "freezer", "memory", "devices", "cpu", ""):
            if c in self.paths:
                return self.paths[c]
        return next(iter(self.paths.values()), None)

    def pids(self) -> list[int]:
        d = self._procs_dir()
        return all_procs(d) if d else []

    def kill_all(self, sig: int) -> None:
        if not self.exists():
            return
        # freeze first so nothing forks past the signal (runc's signalAllProcesses)
        can_freeze = "freezer" in self.paths and os.path.isdir(self.paths["freezer"])
        was_frozen = self.frozen()
        if can_freeze and not was_frozen:
            try:
                self.freeze()
            except CgroupError:
                can_freeze = False  # a task stuck in D state: signal without the freeze
        try:
            signal_all(self.pids(), sig)
        finally:
            # a v1-frozen task does not act on SIGKILL until thawed, so a kill always thaws
            if can_freeze and (not was_frozen or sig == SIGKILL):
                self.thaw()

    def destroy(self) -> None:
        if not self.exists():
            return
        if self.pids():
            self.kill_all(SIGKILL)
            d = self._procs_dir()
            if d and not wait_empty(d, 5.0):
                raise CgroupError(f"cgroup v1: processes remain in {d} after SIGKILL")
        for d in self._dirs():
            remove_tree(d, "v1")

    # -- accounting --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        p = self.paths
        return {
            "cpu": _cpu_stats(p.get("cpu"), p.get("cpuacct")),
            "cpuset": {},
            "memory": _memory_stats(p.get("memory")),
            "pids": {
                "current": read_int(p["pids"], "pids.current") if "pids" in p else 0,
                "limit": read_int(p["pids"], "pids.max", 0) if "pids" in p else 0,
            },
            "blkio": _blkio_stats(p.get("blkio")),
            "hugetlb": _hugetlb_stats(p.get("hugetlb")),
        }


def _proc_cgroup(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return parse_proc_cgroup(f.read())
    except OSError:
        return {}


def _period_then_quota(d: str, period_file: str, period: int, quota_file: str, quota: int) -> None:
    """Period first; if the kernel refuses it (the old quota over the new period exceeds the parent),
    set the quota and then retry the period (runc's order)."""
    retry = False
    if period:
        try:
            write_file(d, period_file, str(period), "cpu")
        except CgroupValueError:
            if not quota:
                raise
            retry = True
    if quota:
        write_file(d, quota_file, str(quota), "cpu")
        if retry:
            write_file(d, period_file, str(period), "cpu")


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split()]


def _cpu_stats(cpu: str | None, acct: str | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"total": 0, "kernel": 0, "user": 0}
    if acct:
        usage["total"] = read_int(acct, "cpuacct.usage")
        usage["percpu"] = _ints(read_optional(acct, "cpuacct.usage_percpu"))
        usage["percpu_kernel"] = _ints(read_optional(acct, "cpuacct.usage_percpu_sys"))
        usage["percpu_user"] = _ints(read_optional(acct, "cpuacct.usage_percpu_user"))
        ticks = read_keyed(acct, "cpuacct.stat")  # USER_HZ ticks
        usage["kernel"] = ticks.get("system", 0) * 1_000_000_000 // _CLK_TCK
        usage["user"] = ticks.get("user", 0) * 1_000_000_000 // _CLK_TCK
    st = read_keyed(cpu, "cpu.stat") if cpu else {}
    return {
        "usage": usage,
        "throttling": {
            "periods": st.get("nr_periods", 0),
            "throttled_periods": st.get("nr_throttled", 0),
            "throttled_time": st.get("throttled_time", 0),
        },
    }


def _entry(d: str, prefix: str) -> dict[str, int]:
    return {
        "limit": read_int(d, prefix + "limit_in_bytes"),
        "usage": read_int(d, prefix + "usage_in_bytes"),
        "max": read_int(d, prefix + "max_usage_in_bytes"),
        "failcnt": read_int(d, prefix + "failcnt"),
    }


def _memory_stats(d: str | None) -> dict[str, Any]:
    if not d:
        return {}
    raw = read_keyed(d, "memory.stat")
    oom = read_keyed(d, "memory.oom_control")
    return {
        "cache": raw.get("total_cache", raw.get("cache", 0)),
        "rss": raw.get("total_rss", raw.get("rss", 0)),
        "usage": _entry(d, "memory."),
        "swap": _entry(d, "memory.memsw."),
        "kernel": _entry(d, "memory.kmem."),
        "kernelTCP": _entry(d, "memory.kmem.tcp."),
        "raw": raw,
        # v1 counts OOM kills (oom_kill, 4.13+); an OOM that did not kill shows in under_oom only
        "oom_events": oom.get("oom_kill", 0),
        "oom_kill": oom.get("oom_kill", 0),
    }


def _blkio_entries(text: str | None) -> list[dict[str, Any]]:
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return out


def _blkio_stats(d: str | None) -> dict[str, Any]:
    if not d:
        return {}
    # CFQ's files, else BFQ's, else the throttle layer's, which counts every I/O (runc's order)
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        sbytes = read_optional(d, prefix + "io_service_bytes_recursive")
        if sbytes is None:
            continue
        entries = _blkio_entries(sbytes)
        if entries or prefix == "blkio.throttle.":
            return {
                "ioServiceBytesRecursive": entries,
                "ioServicedRecursive": _blkio_entries(read_optional(d, prefix + "io_serviced_recursive")),
            }
    return {"ioServiceBytesRecursive": [], "ioServicedRecursive": []}


def _hugetlb_stats(d: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not d or not os.path.isdir(d):
        return out
    for name in os.listdir(d):
        if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes") and ".rsvd." not in name:
            size = name[len("hugetlb.") : -len(".usage_in_bytes")]
            out[size] = {
                "usage": read_int(d, name),
                "max": read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
                "failcnt": read_int(d, f"hugetlb.{size}.failcnt"),
            }
    return out
