"""The v1 driver on this host's real hierarchies, as root: limits are enforced, not just written.

Every process a test starts carries the test's token in its command line and every cgroup is named
after it, so ``leakcheck`` finds anything left behind. A process starts blocked on its stdin, is
placed in the cgroup, then released: all it does happens inside the cgroup.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.runtime.cgroups import CgroupError, open_manager
from pallet.runtime.cgroups.common import CgroupValueError
from pallet.runtime.cgroups.devices import v1_parse_list, v1_target
from tests.helpers import cgroup_checks as checks
from tests.helpers.held import proc_state

ROOT = "/sys/fs/cgroup"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.isdir(f"{ROOT}/memory") or os.path.exists(f"{ROOT}/cgroup.controllers"),
        reason="needs cgroup v1 hierarchies",
    ),
]


@pytest.fixture
def mgr(token: str, leakcheck: None) -> Iterator[object]:
    m = open_manager(f"/{token}", token)
    try:
        yield m
    finally:
        m.destroy()


def read(m, controller: str, name: str) -> str:  # noqa: ANN001
    return Path(m.paths[controller], name).read_text().strip()


def test_place_a_process_and_read_limits_back(mgr, held) -> None:
    h = held("import time; time.sleep(60)")
    mgr.apply(h.pid)
    mgr.set(
        {
            "memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20, "swappiness": 0},
            "pids": {"limit": 16},
            "cpu": {
                "shares": 512,
                "quota": 20000,
                "period": 100000,
                "burst": 5000,
                "realtimeRuntime": 10000,
                "realtimePeriod": 1000000,
                "cpus": "0",
                "mems": "0",
            },
        }
    )
    assert read(mgr, "cpu", "cpu.cfs_burst_us") == "5000"
    assert read(mgr, "cpu", "cpu.rt_runtime_us") == "10000"
    assert read(mgr, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read(mgr, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert read(mgr, "memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(mgr, "pids", "pids.max") == "16"
    assert read(mgr, "cpu", "cpu.shares") == "512"
    assert read(mgr, "cpu", "cpu.cfs_quota_us") == "20000"
    assert read(mgr, "cpuset", "cpuset.cpus") == "0"
    for c in mgr.paths:
        assert str(h.pid) in read(mgr, c, "cgroup.procs").split(), c
    assert f":/{mgr.paths['memory'].rsplit('/', 1)[1]}" in Path(f"/proc/{h.pid}/cgroup").read_text()
    assert mgr.pids() == [h.pid]
    s = mgr.stats()
    assert s["pids"] == {"current": 1, "limit": 16}
    assert s["memory"]["usage"]["limit"] == 64 << 20
    # update a running container: raise the limits
    mgr.set({"pids": {"limit": 64}, "memory": {"limit": 256 << 20, "swap": 512 << 20}})
    assert read(mgr, "pids", "pids.max") == "64"
    assert read(mgr, "memory", "memory.limit_in_bytes") == str(256 << 20)


def test_memory_hog_is_oom_killed_and_counted(mgr, held) -> None:
    checks.oom_kill_is_counted(mgr, held, 48 << 20, lambda s: None)


def test_events_stream_reports_the_oom_and_stats(mgr, held) -> None:
    checks.events_stream_ends_in_oom(mgr, held)


def test_fork_bomb_stops_at_pids_max(mgr, held) -> None:
    checks.fork_bomb_stops_at_pids_max(mgr, held, lambda s: None)


def test_busy_loop_under_a_cpu_quota_is_throttled(mgr, held) -> None:
    s = checks.busy_loop_is_throttled(mgr, held, {"quota": 10000, "period": 100000})  # 10 % of one cpu
    assert sum(s["cpu"]["usage"]["percpu"]) > 0


def test_freeze_stops_the_process_and_thaw_resumes_it(mgr, held, token) -> None:
    counter = Path(f"/tmp/{token}.count")
    try:
        h = held(
            f"import time\np = {str(counter)!r}\ni = 0\n"
            "while True:\n    i += 1\n    open(p, 'w').write(str(i))\n    time.sleep(0.005)\n"
        )
        mgr.apply(h.pid)
        h.release()
        while not counter.exists() or not counter.read_text():
            time.sleep(0.01)
        mgr.freeze()
        assert mgr.frozen()
        assert proc_state(h.pid) in ("D", "T")  # the v1 freezer parks tasks in the refrigerator
        seen = counter.read_text()
        time.sleep(0.3)
        assert counter.read_text() == seen  # no progress while frozen
        mgr.thaw()
        assert not mgr.frozen()
        deadline = time.monotonic() + 10
        while counter.read_text() == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counter.read_text() != seen
    finally:
        counter.unlink(missing_ok=True)


def test_kill_all_signals_every_process(mgr, held) -> None:
    h = held("import os, time\nfor _ in range(3):\n    if os.fork() == 0: break\ntime.sleep(60)\n")
    mgr.apply(h.pid)
    h.release()
    deadline = time.monotonic() + 10
    while len(mgr.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(mgr.pids()) == 4
    mgr.kill_all(signal.SIGTERM)
    assert h.p.wait(timeout=10) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while mgr.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mgr.pids() == []
    assert not mgr.frozen()  # left thawed


def test_destroy_kills_and_removes_even_a_frozen_cgroup(mgr, held, token) -> None:
    h = held("import os, time\nfor _ in range(2):\n    if os.fork() == 0: break\ntime.sleep(60)\n")
    mgr.apply(h.pid)
    h.release()
    mgr.set({"pids": {"limit": 10}})
    deadline = time.monotonic() + 10
    while len(mgr.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    mgr.freeze()
    again = open_manager(f"/{token}", token)  # a later command re-opens it from the same arguments
    assert again.paths == mgr.paths and again.exists()
    again.destroy()
    assert not again.exists() and not mgr.exists()
    for d in mgr.paths.values():
        assert not os.path.exists(d)
    assert h.p.wait(timeout=10) == -signal.SIGKILL
    again.destroy()  # idempotent


def test_a_value_the_kernel_refuses_is_one_clear_error(mgr) -> None:
    mgr.apply(0)  # create without a process
    with pytest.raises(CgroupValueError) as e:
        mgr.set({"cpu": {"quota": 500}})  # below the kernel's 1 ms minimum
    assert str(e.value) == "cgroup cpu: cannot set cpu.cfs_quota_us to 500: invalid argument"
    with pytest.raises(CgroupValueError, match=r"cpu.cpus: must be a list"):
        mgr.set({"cpu": {"cpus": "0-x"}})
    with pytest.raises(CgroupError, match=r"cpuset.cpus to 0-4095: "):
        mgr.set({"cpu": {"cpus": "0-4095"}})  # cpus this machine does not have


def test_devices_rules_are_enforced(mgr, held) -> None:
    h = held(checks.OPENER)
    mgr.apply(h.pid)
    mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert "c 1:3 rwm" in read(mgr, "devices", "devices.list").splitlines()

    def try_open(path: str) -> str:
        return checks.try_open(h, path)

    h.release()
    assert try_open("/dev/null") == "ok"  # a default device
    assert try_open("/dev/kmsg") == str(errno.EPERM)
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"},
    ]
    mgr.set({"devices": rules})  # an update: only the difference is written
    assert try_open("/dev/kmsg") == "ok"
    assert try_open("/dev/null") == "ok"
    # the kernel's own list agrees with the state our emulation computed
    assert v1_parse_list(read(mgr, "devices", "devices.list")) == v1_target(rules)
    mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert try_open("/dev/kmsg") == str(errno.EPERM)


def test_relative_path_lives_below_our_own_cgroup(token, leakcheck) -> None:
    m = open_manager(f"{token}/c", token)
    own = {
        line.split(":")[1]: line.split(":", 2)[2]
        for line in Path("/proc/self/cgroup").read_text().splitlines()
    }
    try:
        assert m.paths["memory"] == os.path.normpath(f"{ROOT}/memory/{own['memory']}/{token}/c")
        m.apply(0)
        assert os.path.isdir(m.paths["memory"])
    finally:
        m.destroy()
        for d in m.paths.values():  # the parent {token} was made by mkdir -p; runc leaves it too
            try:
                os.rmdir(os.path.dirname(d))
            except FileNotFoundError:
                pass


@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no loop devices")
def test_writes_to_a_loop_device_are_throttled_and_accounted(mgr, held, token) -> None:
    def limit_reads_back(major: int, minor: int) -> None:
        assert read(mgr, "blkio", "blkio.throttle.write_bps_device") == f"{major}:{minor} {4 << 20}"

    with checks.loop_device(token, 16 << 20) as (dev, _, _):
        checks.writes_are_throttled(mgr, held, dev, limit_reads_back)


def test_cpu_shares_shift_cpu_time_between_two_competing_cgroups(token, leakcheck, held) -> None:
    """Two busy loops pinned to one cpu, shares 2048 against 512: the kernel should give about 4:1."""
    checks.shares_split_cpu_time(token, held, {"cpus": "0"})


ROOTLESS_SCRIPT = """
import json, os, sys
from pallet.runtime.cgroups import CgroupError, open_manager
m = open_manager(sys.argv[1], "c", rootless=True)
m.apply(os.getpid())
out = {"paths": sorted(m.paths)}
m.set({"pids": {"limit": 7}})
try:
    m.set({"cpu": {"shares": 100}})
except CgroupError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv"), reason="needs setpriv")
def test_rootless_uses_what_is_delegated_and_skips_the_rest(token, leakcheck) -> None:
    """As an unprivileged user, with only the pids hierarchy delegated (chowned, as systemd or an
    admin would), apply skips the others without error; a limit on a skipped one is a clear error."""
    nobody = 65534
    delegated = Path(ROOT, "pids", token)
    delegated.mkdir()
    try:
        for p in [delegated, *delegated.iterdir()]:
            os.chown(p, nobody, nobody)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
        r = subprocess.run(
            [
                "setpriv",
                f"--reuid={nobody}",
                f"--regid={nobody}",
                "--clear-groups",
                sys.executable,
                "-c",
                ROOTLESS_SCRIPT,
                f"/{token}/c",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        import json

        out = json.loads(r.stdout)
        assert out["paths"] == ["pids"]
        assert out["error"] == (
            "cgroup v1: rootless: cannot set linux.resources.cpu: the cpu cgroup is not writable by this user"
        )
        assert (delegated / "c" / "pids.max").read_text().strip() == "7"
    finally:
        m = open_manager(f"/{token}/c", "c")
        m.destroy()
        delegated.rmdir()


@pytest.mark.alone  # three parallel workers beside it brought the ratio down to 1.3 once
@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no loop devices")
def test_blkio_weight_shifts_io_between_two_competing_cgroups(token, leakcheck, held) -> None:
    """QoS for I/O: two readers of one BFQ-scheduled device, blkio weight 1000 against 100. BFQ's ideal
    is 10:1 (7–27:1 seen here, with two busy loops beside); the assertion asks for clearly more than 1.
    The readers read real blocks with 1 MiB direct reads, so that the device, not a cpu, is what they
    wait for."""
    hi = open_manager(f"/{token}-hi", f"{token}-hi")
    lo = open_manager(f"/{token}-lo", f"{token}-lo")
    procs = []
    try:
        with checks.loop_device(token, 128 << 20, bfq=True) as (dev, major, minor):
            reader = (
                "import os, time\n"
                f"fd = os.open({dev!r}, os.O_RDONLY | os.O_DIRECT)\n"
                "buf = __import__('mmap').mmap(-1, 1 << 20)\n"
                "end = time.monotonic() + 30\n"
                "while time.monotonic() < end:\n"
                "    off = 0\n"
                "    while os.preadv(fd, [buf], off) > 0 and time.monotonic() < end:\n"
                "        off += 1 << 20\n"
            )
            for m, weight in ((hi, 1000), (lo, 100)):
                h = held(reader)
                m.apply(h.pid)
                m.set({"blockIO": {"weight": weight}})
                procs.append(h)
            assert read(hi, "blkio", "blkio.bfq.weight") in ("1000", "default 1000")
            for h in procs:
                h.release()
            time.sleep(0.5)  # both running
            start = [checks.io_bytes(m, major, minor, "Read") for m in (hi, lo)]
            time.sleep(2.0)
            got = [checks.io_bytes(m, major, minor, "Read") - s for m, s in zip((hi, lo), start, strict=True)]
            ratio = got[0] / max(got[1], 1)
            print(
                f"bytes read with blkio weights 1000:100 = {got[0] >> 20} MiB:{got[1] >> 20} MiB, ratio {ratio:.2f}"
            )
            assert ratio > 1.5
    finally:
        for h in procs:  # the readers go before the cgroups (the device is detached once closed)
            h.stop()
        hi.destroy()
        lo.destroy()
