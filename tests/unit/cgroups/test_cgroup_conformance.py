"""One behaviour, both drivers: the manager interface as the runtime uses it (containerd's testsuite
style). Each driver runs on its fake cgroupfs; ``Kernel`` stands in for what the kernel would show."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.runtime.cgroups import Manager, open_manager

LIMIT_FILES = {
    1: {
        "pids": ("pids", "pids.max"),
        "memory": ("memory", "memory.limit_in_bytes"),
        "shares": ("cpu", "cpu.shares"),
    },
    2: {"pids": ("", "pids.max"), "memory": ("", "memory.max"), "shares": ("", "cpu.weight")},
}


class Kernel:
    def __init__(self, m: Manager, version: int) -> None:
        self.m, self.version = m, version

    def value(self, what: str) -> str:
        c, name = LIMIT_FILES[self.version][what]
        return Path(self.m.paths[c], name).read_text().strip()

    def frozen_state(self, frozen: bool) -> None:
        """v1's freezer.state reads back what was written; v2's cgroup.events is the kernel's to update."""
        if self.version == 2:
            Path(self.m.paths[""], "cgroup.events").write_text(f"populated 1\nfrozen {int(frozen)}\n")

    def exit_all(self) -> None:
        for d in self.m.paths.values():
            Path(d, "cgroup.procs").write_text("")


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def driver(request) -> tuple[Manager, int]:
    fs = request.getfixturevalue(f"fake_v{request.param}")
    return open_manager("/pallet/conf", "conf", root=str(fs.root)), request.param


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "60"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_nothing_exists_before_apply(driver) -> None:
    m, _ = driver
    assert not m.exists()
    assert m.pids() == []
    assert not m.frozen()
    m.destroy()  # a no-op, not an error
    m.kill_all(signal.SIGKILL)
    assert not m.exists()


def test_apply_places_the_process(driver, child) -> None:
    m, _ = driver
    m.apply(child.pid)
    assert m.exists()
    assert m.pids() == [child.pid]


def test_set_writes_limits(driver) -> None:
    m, version = driver
    m.apply(1)
    k = Kernel(m, version)
    m.set({"pids": {"limit": 10}, "memory": {"limit": 64 << 20}, "cpu": {"shares": 1024}})
    assert k.value("pids") == "10"
    assert k.value("memory") == str(64 << 20)
    assert k.value("shares") == ("1024" if version == 1 else "100")
    m.set({})  # nothing to do
    m.set({"pids": {"limit": 20}})  # an update touches only what it names
    assert k.value("pids") == "20" and k.value("memory") == str(64 << 20)


def test_freeze_and_thaw(driver) -> None:
    m, version = driver
    m.apply(1)
    k = Kernel(m, version)
    k.frozen_state(True)
    m.freeze()
    assert m.frozen()
    k.frozen_state(False)
    m.thaw()
    assert not m.frozen()


def test_kill_all_signals_every_process(driver, child) -> None:
    m, version = driver
    m.apply(child.pid)
    k = Kernel(m, version)
    # v2: already frozen (the fake cannot flip cgroup.events while the driver waits on it)
    k.frozen_state(True)
    m.kill_all(signal.SIGTERM)
    assert child.wait(timeout=10) == -signal.SIGTERM


def test_kill_all_uses_cgroup_kill_for_sigkill_on_v2(fake_v2) -> None:
    m = open_manager("/pallet/conf", "conf", root=str(fake_v2.root))
    m.apply(999_999_999)
    m.kill_all(signal.SIGKILL)
    assert Path(m.paths[""], "cgroup.kill").read_text() == "1"


def test_destroy_removes_everything_and_is_idempotent(driver) -> None:
    m, version = driver
    m.apply(1)
    Kernel(m, version).exit_all()
    m.destroy()
    assert not m.exists()
    for d in m.paths.values():
        assert not Path(d).exists()
        assert Path(d).parent.exists()  # only the container's own cgroup goes, as runc
    m.destroy()


def test_destroy_removes_child_cgroups_too(driver) -> None:
    m, version = driver
    m.apply(1)
    Kernel(m, version).exit_all()
    import pallet.runtime.cgroups.common as common

    for d in m.paths.values():
        common.mkdir(str(Path(d, "sub")), 0o755)  # a nested cgroup the container made
    m.destroy()
    assert not m.exists()


def test_stats_have_one_shape(driver) -> None:
    m, _ = driver
    m.apply(1)
    s = m.stats()
    assert {"cpu", "memory", "pids", "blkio", "hugetlb"} <= set(s)
    assert {"total", "kernel", "user"} <= set(s["cpu"]["usage"])
    assert set(s["cpu"]["throttling"]) == {"periods", "throttled_periods", "throttled_time"}
    assert {"limit", "usage", "max", "failcnt"} <= set(s["memory"]["usage"])
    assert {"oom_events", "oom_kill", "cache", "rss"} <= set(s["memory"])
    assert set(s["pids"]) == {"current", "limit"}
