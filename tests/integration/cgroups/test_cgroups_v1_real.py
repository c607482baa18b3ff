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
from pallet.runtime.cgroups.oom import stream, watch_oom
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
    h = held("b = []\nwhile True: b.append(bytearray(1 << 20))")
    mgr.apply(h.pid)
    mgr.set({"memory": {"limit": 48 << 20, "swap": 48 << 20}})  # memory+swap = memory: no swap to escape to
    with watch_oom(mgr) as w:
        h.release()
        assert h.p.wait(timeout=60) == -signal.SIGKILL
        assert w.wait(timeout=10) >= 1
        s = mgr.stats()
        assert s["memory"]["oom_kill"] >= 1
        assert s["memory"]["usage"]["max"] <= 48 << 20
        assert not w.gone
        mgr.destroy()
        assert w.wait(timeout=10) == 0  # the removal wakes the watcher: no OOM, and it is done
        assert w.gone


def test_events_stream_reports_the_oom_and_stats(mgr, held) -> None:
    h = held("import time\nb = []\nwhile True: b.append(bytearray(1 << 20)); time.sleep(0.001)")
    mgr.apply(h.pid)
    mgr.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    seen: list[str] = []
    events = stream(mgr, 0.1)
    h.release()
    deadline = time.monotonic() + 60
    for ev in events:
        seen.append(ev["type"])
        if ev["type"] == "stats":
            assert ev["data"]["memory"]["usage"]["limit"] == 32 << 20
        if ev["type"] == "oom" or time.monotonic() > deadline:
            break
    events.close()
    assert seen[0] == "stats" and seen[-1] == "oom"


def test_fork_bomb_stops_at_pids_max(mgr, held) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print(n, e.errno, flush=True)\n"
        "time.sleep(60)\n"
    )
    h = held(code)
    mgr.apply(h.pid)
    mgr.set({"pids": {"limit": 8}})
    h.release()
    forked, err = (int(x) for x in h.line().split())
    assert err == errno.EAGAIN
    assert forked == 7  # 8 tasks in all, the bomb itself included
    assert mgr.stats()["pids"]["current"] == 8
    assert len(mgr.pids()) == 8
    mgr.destroy()
    assert not mgr.exists()
    assert h.p.wait(timeout=10) == -signal.SIGKILL


def test_busy_loop_under_a_cpu_quota_is_throttled(mgr, held) -> None:
    h = held("import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0: pass\n")
    mgr.apply(h.pid)
    mgr.set({"cpu": {"quota": 10000, "period": 100000}})  # 10 % of one cpu
    h.release()
    assert h.p.wait(timeout=60) == 0
    s = mgr.stats()
    assert s["cpu"]["throttling"]["throttled_periods"] > 0
    assert s["cpu"]["throttling"]["throttled_time"] > 0
    assert s["cpu"]["usage"]["total"] > 0
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
    code = (
        "import sys\n"
        "for line in sys.stdin:\n"
        "    try:\n"
        "        open(line.strip(), 'rb').close(); print('ok', flush=True)\n"
        "    except OSError as e:\n"
        "        print(e.errno, flush=True)\n"
    )
    h = held(code)
    mgr.apply(h.pid)
    mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert "c 1:3 rwm" in read(mgr, "devices", "devices.list").splitlines()

    def try_open(path: str) -> str:
        assert h.p.stdin is not None
        h.p.stdin.write(path + "\n")
        h.p.stdin.flush()
        return h.line()

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
    img = Path(f"/tmp/{token}.img")
    dev = ""
    try:
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(img)], capture_output=True, text=True, check=True
        ).stdout.strip()
        rdev = os.stat(dev).st_rdev
        major, minor = os.major(rdev), os.minor(rdev)
        h = held(
            "import os, sys\n"
            f"os.execvp('dd', ['dd', 'if=/dev/zero', 'of={dev}', 'bs=64k', 'count=32', 'oflag=direct', 'status=none'])\n"
        )
        mgr.apply(h.pid)
        mgr.set({"blockIO": {"throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 4 << 20}]}})
        assert read(mgr, "blkio", "blkio.throttle.write_bps_device") == f"{major}:{minor} {4 << 20}"
        started = time.monotonic()
        h.release()
        assert h.p.wait(timeout=60) == 0
        # 2 MiB at 4 MiB/s: reported, not asserted (no timing asserts in tests)
        print(f"dd of 2 MiB under a 4 MiB/s limit took {time.monotonic() - started:.2f}s")
        entries = mgr.stats()["blkio"]["ioServiceBytesRecursive"]
        written = [
            e["value"] for e in entries if (e["major"], e["minor"], e["op"]) == (major, minor, "Write")
        ]
        assert written and written[0] >= 2 << 20
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        img.unlink(missing_ok=True)


def test_cpu_shares_shift_cpu_time_between_two_competing_cgroups(token, leakcheck, held) -> None:
    """Two busy loops pinned to one cpu, shares 2048 against 512: the kernel should give about 4:1."""
    hi = open_manager(f"/{token}-hi", f"{token}-hi")
    lo = open_manager(f"/{token}-lo", f"{token}-lo")
    loop = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 30: pass\n"
    try:
        procs = []
        for m, shares in ((hi, 2048), (lo, 512)):
            h = held(loop)
            m.apply(h.pid)
            m.set({"cpu": {"shares": shares, "cpus": "0"}})
            procs.append(h)
        for h in procs:
            h.release()
        # measured in cpu time used, not wall time: run until both together used 1 s of cpu 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            used = [m.stats()["cpu"]["usage"]["total"] for m in (hi, lo)]
            if sum(used) >= 1_000_000_000:
                break
            time.sleep(0.05)
        ratio = used[0] / max(used[1], 1)
        print(f"cpu time with shares 2048:512 = {used[0] / 1e9:.2f}s:{used[1] / 1e9:.2f}s, ratio {ratio:.2f}")
        assert ratio > 2.0
    finally:
        hi.destroy()
        lo.destroy()


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


def _loop_with_bfq(img: Path) -> str:
    """A loop device doing direct I/O to its file, with BFQ as its scheduler: BFQ is what honours
    blkio weights since CFQ left the kernel (5.0), and a new loop device has no scheduler."""
    with open(img, "wb") as f:
        f.truncate(256 << 20)  # sparse: reads are cheap, the device queue is the contended resource
    dev = subprocess.run(
        ["losetup", "--find", "--show", "--direct-io=on", str(img)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sched = Path("/sys/block", os.path.basename(dev), "queue", "scheduler")
    try:
        sched.write_text("bfq")
    except OSError:
        subprocess.run(["losetup", "-d", dev], check=False)
        pytest.skip("no bfq I/O scheduler in this kernel")
    return dev


def _read_bytes(m, major: int, minor: int) -> int:  # noqa: ANN001
    entries = m.stats()["blkio"]["ioServiceBytesRecursive"]
    return sum(e["value"] for e in entries if (e["major"], e["minor"], e["op"]) == (major, minor, "Read"))


@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no loop devices")
def test_blkio_weight_shifts_io_between_two_competing_cgroups(token, leakcheck, held) -> None:
    """QoS for I/O: two readers of one BFQ-scheduled device, blkio weight 1000 against 100. BFQ's ideal
    is 10:1; it idles and merges, so less is seen (about 2.5:1 here), but clearly more than 1."""
    img = Path(f"/tmp/{token}.img")
    hi = open_manager(f"/{token}-hi", f"{token}-hi")
    lo = open_manager(f"/{token}-lo", f"{token}-lo")
    dev = ""
    try:
        dev = _loop_with_bfq(img)
        rdev = os.stat(dev).st_rdev
        major, minor = os.major(rdev), os.minor(rdev)
        reader = (
            "import os, time\n"
            f"fd = os.open({dev!r}, os.O_RDONLY | os.O_DIRECT)\n"
            "buf = __import__('mmap').mmap(-1, 1 << 16)\n"
            "end = time.monotonic() + 30\n"
            "while time.monotonic() < end:\n"
            "    off = 0\n"
            "    while os.preadv(fd, [buf], off) > 0 and time.monotonic() < end:\n"
            "        off += 1 << 16\n"
        )
        procs = []
        for m, weight in ((hi, 1000), (lo, 100)):
            h = held(reader)
            m.apply(h.pid)
            m.set({"blockIO": {"weight": weight}})
            procs.append(h)
        assert read(hi, "blkio", "blkio.bfq.weight") in ("1000", "default 1000")
        for h in procs:
            h.release()
        time.sleep(0.5)  # both running
        start = [_read_bytes(m, major, minor) for m in (hi, lo)]
        time.sleep(2.0)
        got = [_read_bytes(m, major, minor) - s for m, s in zip((hi, lo), start, strict=True)]
        ratio = got[0] / max(got[1], 1)
        print(
            f"bytes read with blkio weights 1000:100 = {got[0] >> 20} MiB:{got[1] >> 20} MiB, ratio {ratio:.2f}"
        )
        assert ratio > 1.5
    finally:
        for h in procs if dev else []:
            h.stop()
        hi.destroy()
        lo.destroy()
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        img.unlink(missing_ok=True)
