"""The cgroup v2 driver: one directory in the unified hierarchy.

Controllers are enabled top-down in every ancestor's ``cgroup.subtree_control`` (the kernel only
lets a cgroup use what its parent delegates), then the process is moved in through ``cgroup.procs``.
Device access has no file on v2: it is an eBPF program attached to the directory (devices.py
compiles it, pallet/linux/bpf.py loads it).
"""

from __future__ import annotations

import errno
import os
import select
import time
from types import ModuleType

from pallet.runtime.cgroups import common
from pallet.runtime.cgroups import devices as devrules
from pallet.runtime.cgroups.common import (
    SIGKILL,
    CgroupError,
    CgroupValueError,
    all_procs,
    blkio_weight_to_io_weight,
    read_int,
    read_keyed,
    read_optional,
    read_psi,
    remove_tree,
    shares_to_weight,
    signal_all,
    swap_v1_to_v2,
    validate_resources,
    wait_empty,
    wanted_controllers,
    write_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any

_UNLIMITED = 2**64 - 1  # what runc reports for "max"


def _max(v: int) -> str:
    return "max" if v < 0 else str(v)


class V2Manager:
    version = 2

    def __init__(self, root: str, path: str, *, rootless: bool = False, bpf: ModuleType | Any = None) -> None:
        self.root = root
        self.path = path
        self.rootless = rootless
        self._bpf = bpf
        self.paths: dict[str, str] = {"": path}

    def __repr__(self) -> str:
        return f"V2Manager({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def placement(self) -> tuple[str | None, list[str]]:
        """(the directory a process is born in with clone3, no v1 ``tasks`` files)."""
        return self.path, []

    def apply(self, pid: int) -> None:
        rel = os.path.relpath(self.path, self.root)
        parts = [] if rel == "." else rel.split("/")
        created: list[str] = []
        try:
            current = self.root
            for part in parts:
                self._enable_controllers(current)
                current = os.path.join(current, part)
                if not os.path.isdir(current):
                    try:
                        common.mkdir(current, 0o755)
                    except FileExistsError:
                        pass
                    except FileNotFoundError:
                        # an empty parent removed under us: make it again (one retry, then the error)
                        common.mkdir(os.path.dirname(current), 0o755)
                        created.append(os.path.dirname(current))
                        common.mkdir(current, 0o755)
                        created.append(current)
                    else:
                        created.append(current)
            if pid > 0:
                write_file(self.path, "cgroup.procs", str(pid), "v2")
        except OSError as e:
            self._undo(created)
            if self.rootless and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                self.paths = {}
                return
            raise CgroupError(
                f"cgroup v2: cannot create {self.path}: {os.strerror(e.errno or 0).lower()}"
            ) from e
        except CgroupError as e:
            self._undo(created)
            if (
                self.rootless
                and isinstance(e.__cause__, OSError)
                and e.__cause__.errno in (errno.EACCES, errno.EPERM)
            ):
                self.paths = {}
                return
            raise

    @staticmethod
    def _undo(created: list[str]) -> None:
        for d in reversed(created):
            try:
                common.rmdir(d)
            except OSError:
                pass

    @staticmethod
    def _enable_controllers(directory: str) -> None:
        """Delegate every controller ``directory`` has to its children; ones the kernel refuses
        (cpu while a realtime task is in the parent, say) are skipped, as runc does."""
        available = (read_optional(directory, "cgroup.controllers") or "").split()
        if not available:
            return
        enabled = set((read_optional(directory, "cgroup.subtree_control") or "").split())
        wanted = [c for c in available if c not in enabled]
        if not wanted:
            return
        try:
            write_file(directory, "cgroup.subtree_control", " ".join("+" + c for c in wanted), "v2")
        except CgroupError:
            for c in wanted:
                try:
                    write_file(directory, "cgroup.subtree_control", "+" + c, "v2")
                except CgroupError:
                    pass

    def _need(self) -> str:
        if not self.paths:
            raise CgroupError(f"cgroup v2: rootless: {self.path} is not delegated to this user")
        return self.path

    # -- resources ---------------------------------------------------------------------------------

    def set(self, resources: dict[str, Any]) -> None:
        validate_resources(resources)
        if not resources:
            return
        d = self._need()
        if resources.get("network") and (
            resources["network"].get("classID") or resources["network"].get("priorities")
        ):
            raise CgroupValueError(
                "cgroup v2: linux.resources.network needs the v1 net_cls/net_prio controllers"
            )
        enabled = set((read_optional(d, "cgroup.controllers") or "").split())
        for controller, field in wanted_controllers(resources).items():
            controller = {"blkio": "io"}.get(controller, controller)
            if controller not in enabled and controller not in ("net_cls", "net_prio"):
                raise CgroupError(
                    f"cgroup v2: cannot set linux.resources.{field}: the {controller} controller is not enabled in {d}"
                )
        self._set_pids(d, resources.get("pids") or {})
        self._set_memory(d, resources.get("memory") or {})
        self._set_io(d, resources.get("blockIO") or {})
        self._set_cpu(d, resources.get("cpu") or {})
        for hp in resources.get("hugepageLimits") or []:
            name = f"hugetlb.{hp['pageSize']}"
            write_file(d, name + ".max", str(hp["limit"]), "hugetlb")
            if os.path.exists(os.path.join(d, name + ".rsvd.max")):
                write_file(d, name + ".rsvd.max", str(hp["limit"]), "hugetlb")
        for dev, lim in (resources.get("rdma") or {}).items():
            h, o = lim.get("hcaHandles"), lim.get("hcaObjects")
            line = f"{dev} hca_handle={'max' if h is None else h} hca_object={'max' if o is None else o}"
            write_file(d, "rdma.max", line, "rdma")
        if resources.get("devices") is not None:
            self._set_devices(d, resources["devices"])
        for key, value in (resources.get("unified") or {}).items():
            write_file(d, key, value, "v2 unified")

    @staticmethod
    def _set_pids(d: str, pids: dict[str, Any]) -> None:
        limit = pids.get("limit")
        if limit:
            write_file(d, "pids.max", "max" if limit < 0 else str(limit), "pids")

    @staticmethod
    def _set_memory(d: str, mem: dict[str, Any]) -> None:
        limit = mem.get("limit") or 0
        swap = swap_v1_to_v2(mem.get("swap") or 0, limit)
        if mem.get("checkBeforeUpdate") and limit > 0:
            usage = read_int(d, "memory.current")
            if limit < usage:
                raise CgroupValueError(
                    f"cgroup memory: cannot set memory.max to {limit}: below the current usage {usage}"
                )
        # swappiness, disableOOMKiller and the kernel limits have no v2 file; runc ignores them too
        if swap or (mem.get("swap") or 0) > 0:
            # 0 from the conversion means "unset", unless swap was given equal to the limit: no swap
            write_file(d, "memory.swap.max", _max(swap), "memory")
        if limit:
            write_file(d, "memory.max", _max(limit), "memory")
        res = mem.get("reservation") or 0
        if res:
            write_file(d, "memory.low", _max(res), "memory")

    @staticmethod
    def _set_io(d: str, bio: dict[str, Any]) -> None:
        bfq = os.path.exists(os.path.join(d, "io.bfq.weight"))
        weight = bio.get("weight") or 0
        if weight:
            if bfq:
                write_file(d, "io.bfq.weight", str(weight), "io")
            else:
                write_file(d, "io.weight", str(blkio_weight_to_io_weight(weight)), "io")
        for wd in bio.get("weightDevice") or []:
            w = wd.get("weight") or 0
            if not w:
                continue
            dev = f"{wd['major']}:{wd['minor']}"
            if bfq:
                write_file(d, "io.bfq.weight", f"{dev} {w}", "io")
            else:
                write_file(d, "io.weight", f"{dev} {blkio_weight_to_io_weight(w)}", "io")
        for key, name in (
            ("throttleReadBpsDevice", "rbps"),
            ("throttleWriteBpsDevice", "wbps"),
            ("throttleReadIOPSDevice", "riops"),
            ("throttleWriteIOPSDevice", "wiops"),
        ):
            for td in bio.get(key) or []:
                rate = td["rate"]
                write_file(d, "io.max", f"{td['major']}:{td['minor']} {name}={rate or 'max'}", "io")

    @staticmethod
    def _set_cpu(d: str, cpu: dict[str, Any]) -> None:
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            raise CgroupValueError(
                "cgroup v2: linux.resources.cpu.realtimeRuntime/realtimePeriod: not supported on cgroup v2"
            )
        if cpu.get("idle") is not None:
            write_file(d, "cpu.idle", str(cpu["idle"]), "cpu")
        shares = cpu.get("shares") or 0
        if shares:
            write_file(d, "cpu.weight", str(shares_to_weight(shares)), "cpu")
        quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
        if quota or period:
            if quota == 0:
                # only the period changes: keep the quota already there (cpu.max is "quota period")
                current = (read_optional(d, "cpu.max") or "max").split()
                q = current[0] if current else "max"
            else:
                q = _max(quota)
            write_file(d, "cpu.max", f"{q} {period}" if period else q, "cpu")
        if cpu.get("burst") is not None:
            write_file(d, "cpu.max.burst", str(cpu["burst"]), "cpu")
        if cpu.get("cpus"):
            write_file(d, "cpuset.cpus", cpu["cpus"], "cpuset")
        if cpu.get("mems"):
            write_file(d, "cpuset.mems", cpu["mems"], "cpuset")

    def _set_devices(self, d: str, rules: list[dict[str, Any]]) -> None:
        """Attach the new program before detaching the old ones, so there is no moment without one.

        Loading a program needs CAP_BPF or CAP_SYS_ADMIN: a rootless container goes without, as on
        v1 where its devices cgroup is not writable (runc).
        """
        bpf = self._bpf
        if bpf is None:
            from pallet.linux import bpf as real  # noqa: PLC0415 - ctypes setup only when devices are set

            bpf = self._bpf = real
        program = devrules.device_program(devrules.effective_rules(rules))
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                old = bpf.prog_query(dfd)
                pfd = bpf.prog_load_cgroup_device(program)
            except OSError as e:
                if self.rootless and e.errno in (errno.EPERM, errno.EACCES):
                    return
                log = getattr(e, "log", "")
                raise CgroupError(
                    f"cgroup devices: cannot load the device program for {d}: {e.strerror}"
                    + (f": {log.strip()}" if log else "")
                ) from e
            replaced = False
            try:
                try:
                    bpf.prog_attach(dfd, pfd, bpf.BPF_F_ALLOW_MULTI)
                except OSError as e:
                    # one program attached without BPF_F_ALLOW_MULTI (by another manager) refuses
                    # company; attaching without flags replaces it instead
                    if e.errno != errno.EPERM or len(old) != 1:
                        raise
                    bpf.prog_attach(dfd, pfd, 0)
                    replaced = True
            except OSError as e:
                raise CgroupError(
                    f"cgroup devices: cannot attach the device program to {d}: {e.strerror}"
                ) from e
            finally:
                os.close(pfd)
            for prog_id in [] if replaced else old:
                try:
                    ofd = bpf.prog_get_fd_by_id(prog_id)
                except OSError:
                    continue  # gone already
                try:
                    bpf.prog_detach(dfd, ofd)
                except OSError as e:
                    raise CgroupError(
                        f"cgroup devices: cannot detach the old device program from {d}: {e.strerror}"
                    ) from e
                finally:
                    os.close(ofd)
        finally:
            os.close(dfd)

    # -- freezer -----------------------------------------------------------------------------------

    def freeze(self) -> None:
        d = self._need()
        write_file(d, "cgroup.freeze", "1", "freezer")
        if not self._wait_frozen(d, True, 5.0):
            write_file(d, "cgroup.freeze", "0", "freezer")
            raise CgroupError(f"cgroup freezer: {d} did not freeze in time")

    def thaw(self) -> None:
        d = self._need()
        write_file(d, "cgroup.freeze", "0", "freezer")
        if not self._wait_frozen(d, False, 5.0):
            raise CgroupError(f"cgroup freezer: {d} did not thaw in time")

    def frozen(self) -> bool:
        if not self.paths or not self.exists():
            return False
        return read_keyed(self.path, "cgroup.events").get("frozen") == 1

    @staticmethod
    def _wait_frozen(d: str, want: bool, timeout: float) -> bool:
        """cgroup.events changes raise POLLPRI on its fd (kernfs_notify): wait on that, bounded."""
        deadline = time.monotonic() + timeout
        fd = os.open(os.path.join(d, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            while True:
                os.lseek(fd, 0, os.SEEK_SET)
                text = os.read(fd, 4096).decode()
                state = {k: v for k, _, v in (line.partition(" ") for line in text.splitlines())}
                if state.get("frozen", "0") == ("1" if want else "0"):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                poller.poll(min(left, 0.1) * 1000)
        finally:
            os.close(fd)

    # -- processes ---------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        return all_procs(self.path) if self.paths else []

    def kill_all(self, sig: int) -> None:
        if not self.paths or not self.exists():
            return
        if sig == SIGKILL and os.path.exists(os.path.join(self.path, "cgroup.kill")):
            write_file(self.path, "cgroup.kill", "1", "v2")  # frozen or not, forking or not (5.14+)
            return
        # freeze first so nothing forks past the signal (runc's signalAllProcesses)
        was_frozen = self.frozen()
        froze = False
        if not was_frozen:
            try:
                self.freeze()
                froze = True
            except CgroupError:
                pass
        try:
            signal_all(self.pids(), sig)
        finally:
            if froze or (was_frozen and sig == SIGKILL):
                self.thaw()

    def destroy(self) -> None:
        if not self.paths or not self.exists():
            return
        if self.pids():
            self.kill_all(SIGKILL)
            if not wait_empty(self.path, 5.0):
                raise CgroupError(f"cgroup v2: processes remain in {self.path} after SIGKILL")
        remove_tree(self.path, "v2")

    # -- accounting --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        d = self.path
        cpu = read_keyed(d, "cpu.stat")
        mem_stat = read_keyed(d, "memory.stat")
        mem_events = read_keyed(d, "memory.events")
        usage = read_int(d, "memory.current")
        limit = read_int(d, "memory.max", _UNLIMITED)
        swap_usage = read_int(d, "memory.swap.current")
        swap_limit = read_int(d, "memory.swap.max", _UNLIMITED)
        out: dict[str, Any] = {
            "cpu": {
                "usage": {
                    "total": cpu.get("usage_usec", 0) * 1000,
                    "kernel": cpu.get("system_usec", 0) * 1000,
                    "user": cpu.get("user_usec", 0) * 1000,
                },
                "throttling": {
                    "periods": cpu.get("nr_periods", 0),
                    "throttled_periods": cpu.get("nr_throttled", 0),
                    "throttled_time": cpu.get("throttled_usec", 0) * 1000,
                },
            },
            "cpuset": {},
            "memory": {
                "cache": mem_stat.get("file", 0),
                "rss": mem_stat.get("anon", 0),
                "usage": {
                    "limit": limit,
                    "usage": usage,
                    "max": read_int(d, "memory.peak"),
                    "failcnt": mem_events.get("max", 0),
                },
                # v1 reports memory+swap; v2 swap alone: add memory, as runc does, to keep one meaning
                "swap": {
                    "limit": swap_limit
                    if swap_limit == _UNLIMITED or limit == _UNLIMITED
                    else swap_limit + limit,
                    "usage": swap_usage + usage,
                    "max": read_int(d, "memory.swap.peak"),
                    "failcnt": read_keyed(d, "memory.swap.events").get("fail", 0),
                },
                "raw": mem_stat,
                "oom_events": mem_events.get("oom", 0),
                "oom_kill": mem_events.get("oom_kill", 0),
            },
            "pids": {"current": read_int(d, "pids.current"), "limit": read_int(d, "pids.max", 0)},
            "blkio": _io_stats(d),
            "hugetlb": _hugetlb_stats(d),
        }
        for key, section in (
            ("cpu.pressure", "cpu"),
            ("memory.pressure", "memory"),
            ("io.pressure", "blkio"),
        ):
            psi = read_psi(d, key)
            if psi is not None:
                out[section]["psi"] = psi
        return out


def _io_stats(d: str) -> dict[str, Any]:
    sbytes: list[dict[str, Any]] = []
    ops: list[dict[str, Any]] = []
    for line in (read_optional(d, "io.stat") or "").splitlines():
        dev, *fields = line.split()
        major, _, minor = dev.partition(":")
        kv = dict(f.split("=", 1) for f in fields if "=" in f)
        for key, op, into in (
            ("rbytes", "Read", sbytes),
            ("wbytes", "Write", sbytes),
            ("rios", "Read", ops),
            ("wios", "Write", ops),
        ):
            if key in kv:
                into.append({"major": int(major), "minor": int(minor), "op": op, "value": int(kv[key])})
    return {"ioServiceBytesRecursive": sbytes, "ioServicedRecursive": ops}


def _hugetlb_stats(d: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for name in names:
        if name.startswith("hugetlb.") and name.endswith(".current") and ".rsvd." not in name:
            size = name[len("hugetlb.") : -len(".current")]
            out[size] = {  # v2 keeps no peak usage for hugetlb
                "usage": read_int(d, name),
                "failcnt": read_keyed(d, f"hugetlb.{size}.events").get("max", 0),
            }
    return out
