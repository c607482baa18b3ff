"""The v1 driver on a fake cgroupfs: the files it creates and the values it writes, as runc writes them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pallet.runtime.cgroups import CgroupError, open_manager
from pallet.runtime.cgroups.common import CgroupValueError


@pytest.fixture
def mgr(fake_v1):
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root))
    m.apply(4242)
    return m


def rd(m, c: str, name: str) -> str:
    return Path(m.paths[c], name).read_text().strip()


def test_apply_creates_every_hierarchy_and_moves_the_pid(fake_v1) -> None:
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root))
    m.apply(4242)
    for c in ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb", ""):
        assert rd(m, c, "cgroup.procs") == "4242", c
    assert m.exists()


def test_apply_copies_cpuset_cpus_and_mems_down_from_the_parent(fake_v1) -> None:
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root))
    m.apply(1)
    assert rd(m, "cpuset", "cpuset.cpus") == "0-1"
    assert rd(m, "cpuset", "cpuset.mems") == "0"
    assert (fake_v1.root / "cpuset/pallet/cpuset.cpus").read_text().strip() == "0-1"


def test_apply_failure_leaves_nothing_behind(fake_v1, monkeypatch) -> None:
    import pallet.runtime.cgroups.common as common

    def mkdir_no_files_in_pids(path: str, mode: int = 0o777) -> None:
        if "/pids/" in path:
            os.mkdir(path, mode)  # a cgroup without cgroup.procs: the write into it fails
        else:
            fake_v1.mkdir(path, mode)

    monkeypatch.setattr(common, "mkdir", mkdir_no_files_in_pids)
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root))
    nopid = 999_999_999  # above pid_max: no /proc entry, so its origin is the hierarchy's root
    with pytest.raises(CgroupError, match=f"cgroup pids: cannot set cgroup.procs to {nopid}: no such file"):
        m.apply(nopid)
    assert not m.exists()
    assert [p for p in fake_v1.root.glob("*/pallet")] == []
    # the process was put back before the cgroups were removed
    assert (fake_v1.root / "memory/cgroup.procs").read_text() == str(nopid)


def test_rootless_skips_hierarchies_it_cannot_write(fake_v1, monkeypatch) -> None:
    import errno

    import pallet.runtime.cgroups.common as common

    orig = fake_v1.mkdir

    def deny_memory(path: str, mode: int = 0o777) -> None:
        if "/memory/" in path:
            raise PermissionError(errno.EACCES, "denied", path)
        orig(path, mode)

    monkeypatch.setattr(common, "mkdir", deny_memory)
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root), rootless=True)
    m.apply(7)
    assert "memory" not in m.paths and rd(m, "pids", "cgroup.procs") == "7"
    with pytest.raises(CgroupError, match="rootless: .*memory cgroup is not writable by this user"):
        m.set({"memory": {"limit": 1 << 20}})
    m2 = open_manager("/pallet/c2", "c2", root=str(fake_v1.root))
    with pytest.raises(CgroupError, match="cannot create"):
        m2.apply(7)


def test_memory_fields(mgr) -> None:
    mgr.set(
        {
            "memory": {
                "limit": 100 << 20,
                "reservation": 50 << 20,
                "swap": 200 << 20,
                "swappiness": 10,
                "kernelTCP": 8 << 20,
                "disableOOMKiller": True,
            }
        }
    )
    assert rd(mgr, "memory", "memory.limit_in_bytes") == str(100 << 20)
    assert rd(mgr, "memory", "memory.memsw.limit_in_bytes") == str(200 << 20)
    assert rd(mgr, "memory", "memory.soft_limit_in_bytes") == str(50 << 20)
    assert rd(mgr, "memory", "memory.swappiness") == "10"
    assert rd(mgr, "memory", "memory.kmem.tcp.limit_in_bytes") == str(8 << 20)
    assert rd(mgr, "memory", "memory.oom_control") == "1"


def test_memory_unlimited_also_lifts_memsw(mgr) -> None:
    mgr.set({"memory": {"limit": -1}})
    assert rd(mgr, "memory", "memory.limit_in_bytes") == "-1"
    assert rd(mgr, "memory", "memory.memsw.limit_in_bytes") == "-1"


def test_memory_and_swap_write_order_follows_the_current_limit(mgr, monkeypatch) -> None:
    import pallet.runtime.cgroups.v1 as v1

    order: list[str] = []
    real = v1.write_file

    def spy(d: str, name: str, value: str, what: str) -> None:
        order.append(name)
        real(d, name, value, what)

    monkeypatch.setattr(v1, "write_file", spy)
    Path(mgr.paths["memory"], "memory.limit_in_bytes").write_text(str(10 << 20))
    mgr.set({"memory": {"limit": 100 << 20, "swap": 200 << 20}})  # growing: memsw first
    assert order == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    order.clear()
    mgr.set({"memory": {"limit": 20 << 20, "swap": 40 << 20}})  # shrinking: limit first
    assert order == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_check_before_update_refuses_a_limit_below_usage(mgr) -> None:
    Path(mgr.paths["memory"], "memory.usage_in_bytes").write_text(str(64 << 20))
    with pytest.raises(CgroupValueError, match="below the current usage"):
        mgr.set({"memory": {"limit": 32 << 20, "checkBeforeUpdate": True}})
    assert rd(mgr, "memory", "memory.limit_in_bytes") == "9223372036854771712"


def test_cpu_fields(mgr) -> None:
    mgr.set(
        {
            "cpu": {
                "shares": 512,
                "quota": 50000,
                "period": 100000,
                "burst": 1000,
                "realtimeRuntime": 950000,
                "realtimePeriod": 1000000,
                "cpus": "0",
                "mems": "0",
                "idle": 0,
            }
        }
    )
    assert rd(mgr, "cpu", "cpu.shares") == "512"
    assert rd(mgr, "cpu", "cpu.cfs_quota_us") == "50000"
    assert rd(mgr, "cpu", "cpu.cfs_period_us") == "100000"
    assert rd(mgr, "cpu", "cpu.cfs_burst_us") == "1000"
    assert rd(mgr, "cpu", "cpu.rt_runtime_us") == "950000"
    assert rd(mgr, "cpu", "cpu.rt_period_us") == "1000000"
    assert rd(mgr, "cpuset", "cpuset.cpus") == "0"
    assert rd(mgr, "cpuset", "cpuset.mems") == "0"
    assert rd(mgr, "cpu", "cpu.idle") == "0"


def test_cpu_unlimited_quota(mgr) -> None:
    mgr.set({"cpu": {"quota": -1}})
    assert rd(mgr, "cpu", "cpu.cfs_quota_us") == "-1"


def test_pids_limit(mgr) -> None:
    mgr.set({"pids": {"limit": 64}})
    assert rd(mgr, "pids", "pids.max") == "64"
    mgr.set({"pids": {"limit": -1}})
    assert rd(mgr, "pids", "pids.max") == "max"
    mgr.set({"pids": {"limit": 0}})  # 0: leave as is
    assert rd(mgr, "pids", "pids.max") == "max"


def test_blkio_fields(mgr) -> None:
    mgr.set(
        {
            "blockIO": {
                "weight": 300,
                "leafWeight": 200,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 400, "leafWeight": 100}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2097152}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}],
            }
        }
    )
    assert rd(mgr, "blkio", "blkio.weight") == "300"
    assert rd(mgr, "blkio", "blkio.leaf_weight") == "200"
    assert rd(mgr, "blkio", "blkio.weight_device") == "8:0 400"
    assert rd(mgr, "blkio", "blkio.leaf_weight_device") == "8:0 100"
    assert rd(mgr, "blkio", "blkio.throttle.read_bps_device") == "8:0 1048576"
    assert rd(mgr, "blkio", "blkio.throttle.write_bps_device") == "8:16 2097152"
    assert rd(mgr, "blkio", "blkio.throttle.read_iops_device") == "8:0 100"
    assert rd(mgr, "blkio", "blkio.throttle.write_iops_device") == "8:0 200"


def test_blkio_weight_goes_to_bfq_when_cfq_files_are_absent(mgr) -> None:
    d = Path(mgr.paths["blkio"])
    (d / "blkio.weight").unlink()
    (d / "blkio.bfq.weight").write_text("100")
    (d / "blkio.bfq.weight_device").write_text("")
    mgr.set({"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 50}]}})
    assert (d / "blkio.bfq.weight").read_text() == "300"
    assert (d / "blkio.bfq.weight_device").read_text() == "8:0 50"


def test_hugetlb_network_and_rdma(mgr, fake_v1) -> None:
    mgr.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert rd(mgr, "hugetlb", "hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    mgr.set({"network": {"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 5}]}})
    assert rd(mgr, "net_cls", "net_cls.classid") == str(0x100001)
    assert rd(mgr, "net_prio", "net_prio.ifpriomap") == "eth0 5"
    mgr.set({"rdma": {"mlx5_1": {"hcaHandles": 3}}})
    assert rd(mgr, "rdma", "rdma.max") == "mlx5_1 hca_handle=3 hca_object=max"


def test_a_field_whose_controller_is_not_mounted_is_a_clear_error(fake_v1) -> None:
    import shutil

    shutil.rmtree(fake_v1.root / "hugetlb")
    m = open_manager("/pallet/c1", "c1", root=str(fake_v1.root))
    m.apply(1)
    with pytest.raises(
        CgroupError, match=r"linux.resources.hugepageLimits: the hugetlb controller is not mounted"
    ):
        m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]})


def test_unified_is_refused_on_v1(mgr) -> None:
    with pytest.raises(CgroupValueError, match="unified needs cgroup v2"):
        mgr.set({"unified": {"memory.high": "1000000"}})


def _spy_writes(monkeypatch) -> list[tuple[str, str]]:  # noqa: ANN001
    import pallet.runtime.cgroups.v1 as v1

    writes: list[tuple[str, str]] = []
    real = v1.write_file

    def spy(d: str, name: str, value: str, what: str) -> None:
        writes.append((name, value))
        real(d, name, value, what)

    monkeypatch.setattr(v1, "write_file", spy)
    return writes


RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
    {"allow": False, "type": "b", "major": 8, "minor": -1, "access": "m"},
]


def test_devices_on_a_new_cgroup_reset_then_allow_rules_and_defaults(mgr, monkeypatch) -> None:
    writes = _spy_writes(monkeypatch)
    mgr.set({"devices": RULES})  # the fake's devices.list says "a *:* rwm", as a new cgroup's does
    assert writes[0] == ("devices.deny", "a")
    allowed = {line for name, line in writes[1:] if name == "devices.allow"}
    assert {"c 10:229 rw", "c 1:3 rwm", "c 136:* rwm", "c *:* m", "b *:* m"} <= allowed
    assert len(allowed) == len(writes) - 1  # nothing but the reset and the grants
    assert "b 8:* m" not in allowed  # a deny with no grant to take from changes nothing


def test_devices_update_writes_only_the_difference(mgr, monkeypatch) -> None:
    from pallet.runtime.cgroups.devices import v1_target

    before = v1_target(RULES)
    # what the kernel would list after the first set
    listing = "".join(
        f"{t} {ma}:{mi} {''.join(c for c in 'rwm' if c in acc)}\n"
        for (t, ma, mi), acc in before.exceptions.items()
    )
    Path(mgr.paths["devices"], "devices.list").write_text(listing)
    writes = _spy_writes(monkeypatch)
    mgr.set({"devices": RULES})
    assert writes == []  # same rules: nothing to write, nothing denied for a moment
    new = [r for r in RULES if r.get("major") != 10] + [
        {"allow": True, "type": "c", "major": 4, "minor": 1, "access": "r"}
    ]
    mgr.set({"devices": new})
    assert writes == [("devices.allow", "c 4:1 r"), ("devices.deny", "c 10:229 rw")]  # grants first


def test_a_value_the_kernel_refuses_names_file_and_value(mgr, monkeypatch) -> None:
    import errno

    import pallet.runtime.cgroups.common as common

    real_open = os.open

    def refuse(path, flags, *a):  # noqa: ANN001, ANN202
        if path.endswith("memory.limit_in_bytes") and flags & os.O_WRONLY:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(common.os, "open", refuse)
    with pytest.raises(CgroupValueError) as e:
        mgr.set({"memory": {"limit": 1000}})
    assert str(e.value) == "cgroup memory: cannot set memory.limit_in_bytes to 1000: invalid argument"


def test_period_refused_first_is_retried_after_the_quota(mgr, monkeypatch) -> None:
    import errno

    import pallet.runtime.cgroups.common as common

    real_open = os.open
    state = {"quota_set": False}

    def kernel(path, flags, *a):  # noqa: ANN001, ANN202
        if path.endswith("cpu.cfs_quota_us") and flags & os.O_WRONLY:
            state["quota_set"] = True
        if path.endswith("cpu.cfs_period_us") and flags & os.O_WRONLY and not state["quota_set"]:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(common.os, "open", kernel)
    mgr.set({"cpu": {"quota": 5000, "period": 10000}})
    assert rd(mgr, "cpu", "cpu.cfs_period_us") == "10000"
    assert rd(mgr, "cpu", "cpu.cfs_quota_us") == "5000"


def test_stats_parses_v1_files(mgr) -> None:
    m = mgr
    Path(m.paths["cpuacct"], "cpuacct.usage").write_text("5000000000\n")
    Path(m.paths["cpuacct"], "cpuacct.usage_percpu").write_text("3000000000 2000000000 \n")
    Path(m.paths["cpuacct"], "cpuacct.usage_percpu_sys").write_text("1000000000 0\n")
    Path(m.paths["cpuacct"], "cpuacct.usage_percpu_user").write_text("2000000000 2000000000\n")
    Path(m.paths["cpuacct"], "cpuacct.stat").write_text(f"user {3 * os.sysconf('SC_CLK_TCK')}\nsystem 0\n")
    Path(m.paths["cpu"], "cpu.stat").write_text("nr_periods 10\nnr_throttled 4\nthrottled_time 123456\n")
    Path(m.paths["memory"], "memory.usage_in_bytes").write_text("1048576\n")
    Path(m.paths["memory"], "memory.max_usage_in_bytes").write_text("2097152\n")
    Path(m.paths["memory"], "memory.limit_in_bytes").write_text("4194304\n")
    Path(m.paths["memory"], "memory.failcnt").write_text("7\n")
    Path(m.paths["memory"], "memory.stat").write_text(
        "cache 4096\nrss 8192\ntotal_cache 4096\ntotal_rss 8192\n"
    )
    Path(m.paths["memory"], "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    Path(m.paths["pids"], "pids.current").write_text("3\n")
    Path(m.paths["pids"], "pids.max").write_text("10\n")
    Path(m.paths["blkio"], "blkio.throttle.io_service_bytes_recursive").write_text(
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\nTotal 12288\n"
    )
    Path(m.paths["blkio"], "blkio.throttle.io_serviced_recursive").write_text(
        "8:0 Read 1\n8:0 Write 2\nTotal 3\n"
    )
    Path(m.paths["hugetlb"], "hugetlb.2MB.usage_in_bytes").write_text("2097152\n")
    Path(m.paths["hugetlb"], "hugetlb.2MB.failcnt").write_text("1\n")
    s = m.stats()
    assert s["cpu"]["usage"]["total"] == 5_000_000_000
    assert s["cpu"]["usage"]["percpu"] == [3_000_000_000, 2_000_000_000]
    assert s["cpu"]["usage"]["percpu_kernel"] == [1_000_000_000, 0]
    assert s["cpu"]["usage"]["user"] == 3_000_000_000
    assert s["cpu"]["throttling"] == {"periods": 10, "throttled_periods": 4, "throttled_time": 123456}
    assert s["memory"]["usage"] == {"limit": 4194304, "usage": 1048576, "max": 2097152, "failcnt": 7}
    assert (s["memory"]["cache"], s["memory"]["rss"]) == (4096, 8192)
    assert s["memory"]["oom_kill"] == 2
    assert s["pids"] == {"current": 3, "limit": 10}
    assert {"major": 8, "minor": 0, "op": "Write", "value": 8192} in s["blkio"]["ioServiceBytesRecursive"]
    assert len(s["blkio"]["ioServiceBytesRecursive"]) == 3  # the Total line has no device
    assert s["blkio"]["ioServicedRecursive"][1]["value"] == 2
    assert s["hugetlb"]["2MB"] == {"usage": 2097152, "max": 0, "failcnt": 1}
