"""The v2 driver on a fake cgroupfs: delegation, files and converted values (runc's and crun's)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pallet.runtime.cgroups import CgroupError, open_manager
from pallet.runtime.cgroups.common import (
    CgroupValueError,
    blkio_weight_to_io_weight,
    shares_to_weight,
    swap_v1_to_v2,
)
from pallet.runtime.cgroups.v2 import V2Manager


@pytest.fixture
def mgr(fake_v2):
    m = open_manager("/pallet/c1", "c1", root=str(fake_v2.root))
    m.apply(4242)
    return m


def rd(m, name: str) -> str:
    return Path(m.paths[""], name).read_text().strip()


def test_apply_enables_controllers_top_down_and_moves_the_pid(fake_v2) -> None:
    m = open_manager("/pallet/c1", "c1", root=str(fake_v2.root))
    m.apply(4242)
    root = fake_v2.root
    want = "+cpu +cpuset +memory +io +pids +hugetlb +rdma".split()
    assert sorted((root / "cgroup.subtree_control").read_text().split()) == sorted(want)
    assert sorted((root / "pallet/cgroup.subtree_control").read_text().split()) == sorted(want)
    assert (root / "pallet/c1/cgroup.subtree_control").read_text() == ""  # the leaf delegates nothing
    assert rd(m, "cgroup.procs") == "4242"
    # the controllers really reached the leaf: its files exist (the fake fills them as the kernel would)
    assert rd(m, "memory.max") == "max"


def test_already_enabled_controllers_are_not_written_again(fake_v2) -> None:
    (fake_v2.root / "cgroup.subtree_control").write_text("cpu cpuset memory io pids hugetlb rdma\n")
    m = open_manager("/c1", "c1", root=str(fake_v2.root))
    m.apply(1)
    assert (fake_v2.root / "cgroup.subtree_control").read_text() == "cpu cpuset memory io pids hugetlb rdma\n"


def test_rootless_without_delegation_has_no_cgroup_and_says_so_on_set(fake_v2, monkeypatch) -> None:
    import pallet.runtime.cgroups.common as common

    def denied(path: str, mode: int = 0o777) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(common, "mkdir", denied)
    m = open_manager("/c1", "c1", root=str(fake_v2.root), rootless=True)
    m.apply(1)
    assert m.paths == {} and not m.exists() and m.pids() == []
    m.set({})
    with pytest.raises(CgroupError, match="rootless: .* is not delegated"):
        m.set({"pids": {"limit": 5}})
    with pytest.raises(CgroupError, match="cannot create"):
        open_manager("/c1", "c1", root=str(fake_v2.root)).apply(1)


def test_shares_to_weight_is_crun_curve() -> None:
    assert shares_to_weight(0) == 0
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 100  # the default maps to the default
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(512) < 100 < shares_to_weight(2048) < 10000
    ws = [shares_to_weight(s) for s in range(2, 262145, 997)]
    assert ws == sorted(ws)


def test_blkio_weight_to_io_weight_is_runc_map() -> None:
    assert blkio_weight_to_io_weight(10) == 1
    assert blkio_weight_to_io_weight(1000) == 10000
    assert blkio_weight_to_io_weight(500) == 1 + 490 * 9999 // 990


def test_swap_conversion() -> None:
    assert swap_v1_to_v2(0, -1) == -1  # unlimited memory, swap unset: unlimited swap
    assert swap_v1_to_v2(-1, 100) == -1
    assert swap_v1_to_v2(0, 100) == 0
    assert swap_v1_to_v2(300, 100) == 200  # memory+swap → swap only
    assert swap_v1_to_v2(100, 100) == 0
    with pytest.raises(CgroupValueError, match="needs a memory limit"):
        swap_v1_to_v2(300, 0)
    with pytest.raises(CgroupValueError, match="below the memory limit"):
        swap_v1_to_v2(50, 100)


def test_memory_fields(mgr) -> None:
    mgr.set({"memory": {"limit": 100 << 20, "swap": 300 << 20, "reservation": 50 << 20}})
    assert rd(mgr, "memory.max") == str(100 << 20)
    assert rd(mgr, "memory.swap.max") == str(200 << 20)
    assert rd(mgr, "memory.low") == str(50 << 20)
    mgr.set({"memory": {"limit": -1}})
    assert rd(mgr, "memory.max") == "max"
    assert rd(mgr, "memory.swap.max") == "max"


def test_memory_swap_equal_to_limit_disables_swap(mgr) -> None:
    mgr.set({"memory": {"limit": 64 << 20, "swap": 64 << 20}})
    assert rd(mgr, "memory.max") == str(64 << 20)
    assert rd(mgr, "memory.swap.max") == "0"  # memory+swap == memory: no swap at all (runc)
    mgr.set({"memory": {"limit": 32 << 20}})  # swap not given: left as it was
    assert rd(mgr, "memory.swap.max") == "0"


def test_cpu_fields(mgr) -> None:
    mgr.set(
        {"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 2000, "cpus": "0-1", "mems": "0"}}
    )
    assert rd(mgr, "cpu.weight") == "100"
    assert rd(mgr, "cpu.max") == "50000 100000"
    assert rd(mgr, "cpu.max.burst") == "2000"
    assert rd(mgr, "cpuset.cpus") == "0-1"
    assert rd(mgr, "cpuset.mems") == "0"


def test_cpu_max_variants(mgr) -> None:
    mgr.set({"cpu": {"quota": -1}})
    assert rd(mgr, "cpu.max") == "max"
    mgr.set({"cpu": {"quota": 20000}})
    assert rd(mgr, "cpu.max") == "20000"
    mgr.set({"cpu": {"period": 50000}})  # period alone keeps the quota
    assert rd(mgr, "cpu.max") == "20000 50000"


def test_cpu_idle_and_realtime(mgr) -> None:
    mgr.set({"cpu": {"idle": 1}})
    assert rd(mgr, "cpu.idle") == "1"
    with pytest.raises(CgroupValueError, match="realtime.*not supported on cgroup v2"):
        mgr.set({"cpu": {"realtimeRuntime": 1000}})


def test_pids(mgr) -> None:
    mgr.set({"pids": {"limit": 32}})
    assert rd(mgr, "pids.max") == "32"
    mgr.set({"pids": {"limit": -1}})
    assert rd(mgr, "pids.max") == "max"


def test_io_fields_convert_weights_without_bfq(mgr, monkeypatch) -> None:
    import pallet.runtime.cgroups.v2 as v2

    writes: list[tuple[str, str]] = []
    real = v2.write_file

    def spy(d: str, name: str, value: str, what: str) -> None:
        writes.append((name, value))
        real(d, name, value, what)

    monkeypatch.setattr(v2, "write_file", spy)
    mgr.set(
        {
            "blockIO": {
                "weight": 500,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 0}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 200}],
            }
        }
    )
    assert writes == [
        ("io.weight", str(blkio_weight_to_io_weight(500))),
        ("io.weight", "8:0 10000"),
        ("io.max", "8:0 rbps=1048576"),
        ("io.max", "8:0 wbps=max"),
        ("io.max", "8:16 riops=100"),
        ("io.max", "8:16 wiops=200"),
    ]


def test_io_weight_goes_to_bfq_unconverted(mgr) -> None:
    Path(mgr.paths[""], "io.bfq.weight").write_text("default 100\n")
    mgr.set({"blockIO": {"weight": 500}})
    assert rd(mgr, "io.bfq.weight") == "500"


def test_hugetlb_rdma_unified(mgr) -> None:
    mgr.set(
        {
            "hugepageLimits": [{"pageSize": "2MB", "limit": 8 << 20}],
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 9}},
            "unified": {"memory.high": "1048576"},
        }
    )
    assert rd(mgr, "hugetlb.2MB.max") == str(8 << 20)
    assert rd(mgr, "hugetlb.2MB.rsvd.max") == str(8 << 20)
    assert rd(mgr, "rdma.max") == "mlx5_1 hca_handle=3 hca_object=9"
    assert rd(mgr, "memory.high") == "1048576"


def test_unified_key_without_a_file_is_a_clear_error(mgr) -> None:
    with pytest.raises(CgroupError, match=r"cgroup v2 unified: cannot set misc.max to 1: no such file"):
        mgr.set({"unified": {"misc.max": "1"}})


def test_network_is_refused_on_v2(mgr) -> None:
    with pytest.raises(CgroupValueError, match="net_cls/net_prio"):
        mgr.set({"network": {"classID": 1}})


def test_a_controller_not_delegated_is_a_clear_error(fake_v2) -> None:
    (fake_v2.root / "cgroup.controllers").write_text("memory pids\n")
    m = open_manager("/c1", "c1", root=str(fake_v2.root))
    m.apply(1)
    with pytest.raises(
        CgroupError,
        match=r"cgroup v2: cannot set linux.resources.cpu: the cpu controller is not enabled in /",
    ):
        m.set({"pids": {"limit": 5}, "cpu": {"shares": 1024}})
    assert Path(m.paths[""], "pids.max").read_text() == "max"  # checked before any write


def test_devices_program_replaces_the_previous_one(mgr) -> None:
    from pallet_cgroupfs_fake import FakeBpf

    from pallet.runtime.cgroups.devices import device_program, effective_rules

    bpf = FakeBpf()
    m = V2Manager(mgr.root, mgr.path, bpf=bpf)
    rules = [{"allow": False, "access": "rwm"}]
    m.set({"devices": rules})
    assert bpf.attached == [1]
    assert bpf.programs[1] == device_program(effective_rules(rules))
    m.set({"devices": rules + [{"allow": True, "type": "c", "major": 4, "minor": 0, "access": "rw"}]})
    # the new program is attached before the old one is detached: never a moment without one
    assert bpf.calls == [
        ("load", bpf.calls[0][1]),
        ("attach", 1),
        ("load", bpf.calls[2][1]),
        ("attach", 2),
        ("detach", 1),
    ]
    assert bpf.attached == [2]
    m.set({"memory": {"limit": 1 << 20}})  # no devices key: the program stays
    assert bpf.attached == [2]


def test_freeze_and_thaw_wait_for_cgroup_events(mgr) -> None:
    d = Path(mgr.paths[""])
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")  # as the kernel reports once frozen
    mgr.freeze()
    assert rd(mgr, "cgroup.freeze") == "1"
    assert mgr.frozen()
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    mgr.thaw()
    assert rd(mgr, "cgroup.freeze") == "0"
    assert not mgr.frozen()


def test_stats_parses_v2_files(mgr) -> None:
    d = Path(mgr.paths[""])
    (d / "cpu.stat").write_text(
        "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 7\n"
    )
    (d / "memory.current").write_text("1048576\n")
    (d / "memory.max").write_text("4194304\n")
    (d / "memory.peak").write_text("2097152\n")
    (d / "memory.swap.current").write_text("4096\n")
    (d / "memory.swap.max").write_text("1048576\n")
    (d / "memory.stat").write_text("anon 8192\nfile 4096\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n")
    (d / "pids.current").write_text("3\n")
    (d / "pids.max").write_text("max\n")
    (d / "io.stat").write_text("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n")
    (d / "hugetlb.2MB.current").write_text("2097152\n")
    (d / "hugetlb.2MB.events").write_text("max 3\n")
    (d / "memory.pressure").write_text(
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
    )
    s = mgr.stats()
    assert s["cpu"]["usage"] == {"total": 5_000_000, "user": 3_000_000, "kernel": 2_000_000}
    assert s["cpu"]["throttling"] == {"periods": 10, "throttled_periods": 4, "throttled_time": 7000}
    assert s["memory"]["usage"] == {"limit": 4194304, "usage": 1048576, "max": 2097152, "failcnt": 5}
    assert s["memory"]["swap"]["usage"] == 4096 + 1048576  # v1's meaning: memory+swap
    assert s["memory"]["swap"]["limit"] == 1048576 + 4194304
    assert (s["memory"]["cache"], s["memory"]["rss"]) == (4096, 8192)
    assert (s["memory"]["oom_events"], s["memory"]["oom_kill"]) == (2, 1)
    assert s["memory"]["psi"]["some"] == {"avg10": 1.5, "avg60": 0.0, "avg300": 0.0, "total": 42}
    assert s["pids"] == {"current": 3, "limit": 0}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 8192},
    ]
    assert [e["value"] for e in s["blkio"]["ioServicedRecursive"]] == [1, 2]
    assert s["hugetlb"]["2MB"] == {"usage": 2097152, "failcnt": 3}


def test_unlimited_memory_reads_as_max_uint64(mgr) -> None:
    s = mgr.stats()
    assert s["memory"]["usage"]["limit"] == 2**64 - 1
    assert s["memory"]["swap"]["limit"] == 2**64 - 1


def test_write_error_names_file_and_value(mgr, monkeypatch) -> None:
    import pallet.runtime.cgroups.common as common

    real_open = os.open

    def refuse(path, flags, *a):  # noqa: ANN001, ANN202
        if path.endswith("memory.max") and flags & os.O_WRONLY:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(common.os, "open", refuse)
    with pytest.raises(CgroupValueError) as e:
        mgr.set({"memory": {"limit": 1000}})
    assert str(e.value) == "cgroup memory: cannot set memory.max to 1000: invalid argument"
