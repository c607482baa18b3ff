"""The v2 driver on a pure cgroup v2 host with its controllers, as root: limits are enforced, not just
written. The twin of test_cgroups_v1_real.py.

This hybrid VM has no controllers on its cgroup2 mount, so these tests skip here and run for real in
the user-mode Linux kernel that test_pure_v2_vm.py boots (memory, cpu, io and pids on cgroup2, no
cpuset, no PSI), or on any pure v2 machine: `pytest tests/integration/cgroups`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.runtime.cgroups import CgroupError, open_manager
from pallet.runtime.cgroups.common import CgroupValueError, shares_to_weight
from tests.helpers import cgroup_checks as checks

ROOT = "/sys/fs/cgroup"


def _controllers() -> set[str]:
    try:
        return set(Path(ROOT, "cgroup.controllers").read_text().split())
    except OSError:
        return set()


NEEDED = {"memory", "pids", "cpu", "io"}
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not NEEDED <= _controllers(), reason="needs a pure cgroup v2 host with memory, pids, cpu and io"
    ),
]


@pytest.fixture
def mgr(token: str, leakcheck: None) -> Iterator[object]:
    m = open_manager(f"/{token}", token)
    assert m.version == 2
    try:
        yield m
    finally:
        m.destroy()


def read(m, name: str) -> str:  # noqa: ANN001
    return Path(m.path, name).read_text().strip()


def test_place_a_process_and_read_limits_back(mgr, held) -> None:
    h = held("import time; time.sleep(60)")
    mgr.apply(h.pid)
    mgr.set(
        {
            "memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20},
            "pids": {"limit": 16},
            "cpu": {"shares": 512, "quota": 20000, "period": 100000},
        }
    )
    assert read(mgr, "memory.max") == str(64 << 20)
    assert read(mgr, "memory.swap.max") == str(64 << 20)  # v1's memory+swap less memory, as runc
    assert read(mgr, "memory.low") == str(32 << 20)
    assert read(mgr, "pids.max") == "16"
    assert read(mgr, "cpu.weight") == str(shares_to_weight(512))
    assert read(mgr, "cpu.max") == "20000 100000"
    assert read(mgr, "cgroup.procs").split() == [str(h.pid)]
    assert Path(f"/proc/{h.pid}/cgroup").read_text().strip() == f"0::/{mgr.path.rsplit('/', 1)[1]}"
    assert mgr.pids() == [h.pid]
    s = mgr.stats()
    assert s["pids"] == {"current": 1, "limit": 16}
    assert s["memory"]["usage"]["limit"] == 64 << 20
    assert s["memory"]["swap"]["limit"] == 128 << 20  # reported in v1's meaning again
    # v2 charges memory where it is allocated, not where the process lives now: 0 is possible here
    assert 0 <= s["memory"]["usage"]["usage"] <= 64 << 20
    # update a running container: raise the limits, then lift the quota
    mgr.set({"pids": {"limit": 64}, "memory": {"limit": 256 << 20, "swap": 512 << 20}})
    assert read(mgr, "pids.max") == "64"
    assert read(mgr, "memory.max") == str(256 << 20)
    assert read(mgr, "memory.swap.max") == str(256 << 20)
    mgr.set({"cpu": {"quota": -1, "period": 100000}, "pids": {"limit": -1}})
    assert read(mgr, "cpu.max") == "max 100000"
    assert read(mgr, "pids.max") == "max"


def test_memory_hog_is_oom_killed_and_counted(mgr, held) -> None:
    def v2_files(s: dict) -> None:
        assert read(mgr, "memory.swap.max") == "0"  # memory+swap = memory: no swap
        assert s["memory"]["oom_events"] >= 1  # memory.events, which woke the watcher
        assert s["memory"]["usage"]["failcnt"] >= 1  # memory.events "max"

    checks.oom_kill_is_counted(mgr, held, 48 << 20, v2_files)


def test_events_stream_reports_the_oom_and_stats(mgr, held) -> None:
    checks.events_stream_ends_in_oom(mgr, held)


def test_fork_bomb_stops_at_pids_max(mgr, held) -> None:
    def pids_events(s: dict) -> None:
        assert int(dict(line.split() for line in read(mgr, "pids.events").splitlines())["max"]) >= 1

    checks.fork_bomb_stops_at_pids_max(mgr, held, pids_events)


def test_busy_loop_under_a_cpu_quota_is_throttled(mgr, held) -> None:
    s = checks.busy_loop_is_throttled(mgr, held, {"quota": 10000, "period": 100000, "burst": 0})
    assert read(mgr, "cpu.max.burst") == "0"
    assert s["cpu"]["usage"]["user"] > 0


def test_freeze_holds_a_memory_hog_and_destroy_removes_it(mgr, held) -> None:
    h = held("import os, time\nfor _ in range(2):\n    if os.fork() == 0: break\ntime.sleep(60)\n")
    mgr.apply(h.pid)
    mgr.set({"memory": {"limit": 64 << 20}, "pids": {"limit": 10}})
    h.release()
    deadline = time.monotonic() + 10
    while len(mgr.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    mgr.freeze()
    assert mgr.frozen() and read(mgr, "cgroup.events").count("frozen 1") == 1
    mgr.destroy()
    assert not mgr.exists()
    assert h.p.wait(timeout=10) == -signal.SIGKILL


def test_values_the_kernel_refuses_are_one_clear_error(mgr) -> None:
    mgr.apply(0)  # create without a process
    with pytest.raises(CgroupValueError) as e:
        mgr.set({"cpu": {"quota": 500, "period": 100000}})  # below the kernel's 1 ms minimum
    assert str(e.value) == "cgroup cpu: cannot set cpu.max to 500 100000: invalid argument"
    with pytest.raises(CgroupValueError, match="realtimeRuntime/realtimePeriod: not supported on cgroup v2"):
        mgr.set({"cpu": {"realtimeRuntime": 1000}})
    with pytest.raises(CgroupValueError, match="network needs the v1 net_cls/net_prio controllers"):
        mgr.set({"network": {"classID": 7}})
    if "cpuset" not in _controllers():
        with pytest.raises(CgroupError, match="the cpuset controller is not enabled"):
            mgr.set({"cpu": {"cpus": "0"}})
    assert read(mgr, "cpu.max") == "max 100000"  # nothing half-written


@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no loop devices")
def test_writes_to_a_loop_device_are_throttled_and_accounted(mgr, held, token) -> None:
    def io_max(major: int, minor: int) -> None:
        assert read(mgr, "io.max") == f"{major}:{minor} rbps=max wbps={4 << 20} riops=max wiops=max"

    with checks.loop_device(token, 16 << 20) as (dev, _, _):
        checks.writes_are_throttled(mgr, held, dev, io_max)


def test_cpu_weight_shifts_cpu_time_between_two_competing_cgroups(token, leakcheck, held) -> None:
    """Two busy loops on one cpu, shares 2048 against 512 (cpu.weight after conversion): about 4:1."""
    pin = {"cpus": "0"} if "cpuset" in _controllers() else {}
    if not pin and (os.cpu_count() or 1) > 1:
        pytest.skip("several cpus and no cpuset controller to put both loops on one")
    checks.shares_split_cpu_time(token, held, pin)


ROOTLESS_SCRIPT = """
import json, os, sys
from pallet.runtime.cgroups import CgroupError, open_manager
m = open_manager(sys.argv[1], "c", rootless=True)
m.apply(os.getpid())
out = {"path": m.path, "procs": open(m.path + "/cgroup.procs").read().split()}
m.set({"pids": {"limit": 7}})
try:
    m.set({"memory": {"limit": 1 << 30}})
except CgroupError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv"), reason="needs setpriv")
def test_rootless_uses_a_delegated_subtree(token, leakcheck) -> None:
    """systemd's delegation, done by hand: a subtree chowned to the user below a parent that gives it
    only pids. The user's process starts in a leaf of it (root moves it there, as systemd would); the
    runtime makes the container's cgroup beside it, moves itself in and sets pids; memory, which the
    parent does not hand down, is a clear error."""
    nobody = 65534
    outer = Path(ROOT, token)
    delegated = outer / "user"
    start = delegated / "start"
    try:
        outer.mkdir()
        (outer / "cgroup.subtree_control").write_text("+pids")
        delegated.mkdir()
        start.mkdir()
        for p in (delegated, start):
            for f in (p, p / "cgroup.procs", p / "cgroup.subtree_control", p / "cgroup.threads"):
                os.chown(f, nobody, nobody)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
        # root moves the shell into the leaf (leaving the root cgroup needs write access to its
        # cgroup.procs), then it becomes nobody
        wrapper = f'echo $$ > {start}/cgroup.procs && exec "$@"'
        r = subprocess.run(
            ["sh", "-c", wrapper, "sh", "setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
             sys.executable, "-c", ROOTLESS_SCRIPT, f"/{token}/user/c", token],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["path"] == f"{delegated}/c"
        assert (delegated / "c" / "pids.max").read_text().strip() == "7"
        assert out["error"] == (
            f"cgroup v2: cannot set linux.resources.memory: the memory controller is not enabled in {delegated}/c"
        )
    finally:
        for d in (delegated / "c", start, delegated, outer):
            subprocess.run(["sh", "-c", f"cat {d}/cgroup.procs 2>/dev/null | xargs -r kill -9"], check=False)
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
