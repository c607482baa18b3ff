"""A cgroupfs stand-in on a temporary directory (youki's tmpdir style), for both hierarchies, and a
recording stand-in for pallet.linux.bpf. Fixtures that use them are in conftest.py.

mkdir fills a new cgroup with the control files the kernel would create there (v1: those of the
hierarchy's controller; v2: the core files plus those of the controllers the parent enabled in
``cgroup.subtree_control``), and rmdir removes a cgroup with its files, refusing one that has
children, as the kernel does. Plain files cannot model a process leaving its old cgroup when it is
written into a new one, so the fake does not refuse to remove a cgroup with processes.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_burst_us": "0",
        "cpu.rt_period_us": "1000000",
        "cpu.rt_runtime_us": "0",
        "cpu.idle": "0",
        "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
    },
    "cpuacct": {
        "cpuacct.usage": "0",
        "cpuacct.usage_percpu": "0 0",
        "cpuacct.usage_percpu_sys": "0 0",
        "cpuacct.usage_percpu_user": "0 0",
        "cpuacct.stat": "user 0\nsystem 0\n",
    },
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.memsw.limit_in_bytes": "9223372036854771712",
        "memory.soft_limit_in_bytes": "9223372036854771712",
        "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.usage_in_bytes": "0",
        "memory.max_usage_in_bytes": "0",
        "memory.failcnt": "0",
        "memory.stat": "cache 0\nrss 0\n",
        "cgroup.event_control": "",
    },
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {
        "blkio.weight": "500",
        "blkio.leaf_weight": "500",
        "blkio.weight_device": "",
        "blkio.leaf_weight_device": "",
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.write_bps_device": "",
        "blkio.throttle.read_iops_device": "",
        "blkio.throttle.write_iops_device": "",
        "blkio.throttle.io_service_bytes_recursive": "Total 0\n",
        "blkio.throttle.io_serviced_recursive": "Total 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "hugetlb": {
        "hugetlb.2MB.limit_in_bytes": "9223372036854771712",
        "hugetlb.2MB.usage_in_bytes": "0",
        "hugetlb.2MB.max_usage_in_bytes": "0",
        "hugetlb.2MB.failcnt": "0",
    },
    "net_cls": {"net_cls.classid": "0"},
    "net_prio": {"net_prio.ifpriomap": "lo 0\n"},
    "rdma": {"rdma.max": ""},
}

V2_CORE = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0",
    "cgroup.kill": "",
    "cgroup.type": "domain",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "io.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
}
V2_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.effective": "0-1"},
    "memory": {
        "memory.max": "max",
        "memory.low": "0",
        "memory.high": "max",
        "memory.swap.max": "max",
        "memory.current": "0",
        "memory.swap.current": "0",
        "memory.stat": "anon 0\nfile 0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "io": {"io.weight": "default 100", "io.max": "", "io.stat": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "hugetlb": {
        "hugetlb.2MB.max": "max",
        "hugetlb.2MB.rsvd.max": "max",
        "hugetlb.2MB.current": "0",
        "hugetlb.2MB.events": "max 0\n",
    },
    "rdma": {"rdma.max": ""},
}


class FakeCgroupFS:
    """The cgroup root of one version on a temporary directory, plus its kernel-like mkdir/rmdir."""

    def __init__(self, root: Path, version: int) -> None:
        self.root = root
        self.version = version
        self.mkdirs: list[str] = []
        if version == 1:
            for c, files in V1_FILES.items():
                self._fill(root / c, {"cgroup.procs": "", "tasks": "", **files})
                if c == "cpuset":
                    (root / c / "cpuset.cpus").write_text("0-1\n")
                    (root / c / "cpuset.mems").write_text("0\n")
            self._fill(root / "unified", {"cgroup.controllers": "", "cgroup.procs": "", "cgroup.events": ""})
        else:
            self._fill(root, {**V2_CORE, "cgroup.controllers": " ".join(V2_FILES) + "\n"})

    @staticmethod
    def _fill(d: Path, files: dict[str, str]) -> None:
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        os.mkdir(path, mode)
        self.mkdirs.append(path)
        rel = Path(path).relative_to(self.root)
        if self.version == 1:
            top = rel.parts[0]
            files = {"cgroup.procs": "", "tasks": ""}
            if top != "unified":
                files.update(V1_FILES.get(top, {}))
            else:
                files.update({"cgroup.controllers": "", "cgroup.events": "populated 0\nfrozen 0\n"})
            self._fill(Path(path), files)
            return
        parent = Path(path).parent
        # a plain file keeps what the driver wrote ("+cpu +memory"); the kernel would show "cpu memory"
        enabled = [c.lstrip("+") for c in (parent / "cgroup.subtree_control").read_text().split()]
        files = {**V2_CORE, "cgroup.controllers": " ".join(enabled)}
        for c in enabled:
            files.update(V2_FILES[c])
        self._fill(Path(path), files)

    def rmdir(self, path: str) -> None:
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        if any(x.is_dir() for x in p.iterdir()):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), path)
        shutil.rmtree(p)

    def read(self, path: str, name: str) -> str:
        return (Path(path) / name).read_text()

    def write(self, path: str, name: str, text: str) -> None:
        (Path(path) / name).write_text(text)


class FakeBpf:
    """Records load/attach/detach in place of pallet.linux.bpf; attached programs get ids from 1."""

    BPF_F_ALLOW_MULTI = 2

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.attached: list[int] = []
        self.programs: dict[int, bytes] = {}
        self._fds: dict[int, int] = {}
        self._next = 1

    def prog_query(self, cgroup_fd: int) -> list[int]:
        return list(self.attached)

    def prog_load_cgroup_device(self, insns: bytes) -> int:
        fd = os.open("/dev/null", os.O_RDONLY)  # a real fd, since the driver closes it
        self._fds[fd] = self._next
        self.programs[self._next] = insns
        self._next += 1
        self.calls.append(("load", len(insns) // 8))
        return fd

    def prog_attach(self, cgroup_fd: int, prog_fd: int, flags: int) -> None:
        self.attached.append(self._fds[prog_fd])
        self.calls.append(("attach", self._fds[prog_fd]))

    def prog_get_fd_by_id(self, prog_id: int) -> int:
        fd = os.open("/dev/null", os.O_RDONLY)
        self._fds[fd] = prog_id
        return fd

    def prog_detach(self, cgroup_fd: int, prog_fd: int) -> None:
        self.attached.remove(self._fds[prog_fd])
        self.calls.append(("detach", self._fds[prog_fd]))
