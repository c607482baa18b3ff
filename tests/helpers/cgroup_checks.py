"""The behaviour both cgroup drivers must show for real, through the Manager API alone.

test_cgroups_v1_real.py and test_cgroups_v2_real.py call these and add what each version's own files
say (``check`` gets the stats, or runs, while the cgroup still exists).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pallet.runtime.cgroups import open_manager
from pallet.runtime.cgroups.oom import stream, watch_oom
from tests.helpers.held import Held

Manager = Any
HeldFactory = Callable[[str], Held]

FORK_BOMB = (
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

# opens each path it reads: "ok", or the errno (the device rules at work)
OPENER = (
    "import sys\n"
    "for line in sys.stdin:\n"
    "    try:\n"
    "        open(line.strip(), 'rb').close(); print('ok', flush=True)\n"
    "    except OSError as e:\n"
    "        print(e.errno, flush=True)\n"
)


def try_open(opener: Held, path: str) -> str:
    """What a released OPENER says of ``path``."""
    opener.send(path)
    return opener.line()


def busy_for(seconds: float) -> str:
    return f"import time\nt = time.monotonic()\nwhile time.monotonic() - t < {seconds}: pass\n"


def oom_kill_is_counted(mgr: Manager, held: HeldFactory, limit: int, check: Callable[[dict], None]) -> None:
    """A hog past ``limit`` (swap as much: nowhere to escape) is killed, the watcher wakes and the
    stats count it; removing the cgroup wakes the watcher once more, with no OOM."""
    h = held("b = []\nwhile True: b.append(bytearray(1 << 20))")
    mgr.apply(h.pid)
    mgr.set({"memory": {"limit": limit, "swap": limit}})
    with watch_oom(mgr) as w:
        h.release()
        assert h.p.wait(timeout=60) == -signal.SIGKILL
        assert w.wait(timeout=10) >= 1
        s = mgr.stats()
        assert s["memory"]["oom_kill"] >= 1
        assert s["memory"]["usage"]["max"] <= limit
        check(s)
        assert not w.gone
        mgr.destroy()
        assert w.wait(timeout=10) == 0  # the removal wakes the watcher: no OOM, and it is done
        assert w.gone


def events_stream_ends_in_oom(mgr: Manager, held: HeldFactory) -> None:
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


def fork_bomb_stops_at_pids_max(mgr: Manager, held: HeldFactory, check: Callable[[dict], None]) -> None:
    h = held(FORK_BOMB)
    mgr.apply(h.pid)
    mgr.set({"pids": {"limit": 8}})
    h.release()
    forked, err = (int(x) for x in h.line().split())
    assert err == errno.EAGAIN
    assert forked == 7  # 8 tasks in all, the bomb itself included
    s = mgr.stats()
    assert s["pids"]["current"] == 8
    assert len(mgr.pids()) == 8
    check(s)
    mgr.destroy()  # kills what is left, then removes
    assert not mgr.exists()
    assert h.p.wait(timeout=10) == -signal.SIGKILL


def busy_loop_is_throttled(mgr: Manager, held: HeldFactory, cpu: dict[str, Any]) -> dict[str, Any]:
    """One second of a busy loop under the quota in ``cpu``; the stats once it is done."""
    h = held(busy_for(1.0))
    mgr.apply(h.pid)
    mgr.set({"cpu": cpu})
    h.release()
    assert h.p.wait(timeout=60) == 0
    s: dict[str, Any] = mgr.stats()
    assert s["cpu"]["throttling"]["throttled_periods"] > 0
    assert s["cpu"]["throttling"]["throttled_time"] > 0
    assert s["cpu"]["usage"]["total"] > 0
    return s


def shares_split_cpu_time(token: str, held: HeldFactory, pin: dict[str, str]) -> None:
    """Two busy loops on one cpu (``pin``: cpuset resources that put them there, if needed), one in a
    cgroup with shares 2048 and one with 512 (cpu.weight after conversion on v2), until together they
    used 1 s of cpu time: the first should get about 4 times the second, measured in cpu time."""
    hi = open_manager(f"/{token}-hi", f"{token}-hi")
    lo = open_manager(f"/{token}-lo", f"{token}-lo")
    try:
        procs = []
        for m, shares in ((hi, 2048), (lo, 512)):
            procs.append(held(busy_for(30)))
            m.apply(procs[-1].pid)
            m.set({"cpu": {"shares": shares, **pin}})
        for h in procs:  # both placed first: neither gets a head start
            h.release()
        deadline = time.monotonic() + 30
        used = [0, 0]
        while sum(used) < 1_000_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
            used = [m.stats()["cpu"]["usage"]["total"] for m in (hi, lo)]
        ratio = used[0] / max(used[1], 1)
        print(f"cpu time with shares 2048:512 = {used[0] / 1e9:.2f}s:{used[1] / 1e9:.2f}s, ratio {ratio:.2f}")
        assert ratio > 2.0
    finally:
        hi.destroy()
        lo.destroy()


@contextlib.contextmanager
def loop_device(token: str, size: int, *, bfq: bool = False) -> Iterator[tuple[str, int, int]]:
    """A loop device over a sparse /tmp/<token>.img: (path, major, minor); detached and removed after.
    ``bfq``: direct I/O to its file, with BFQ as its scheduler (what honours blkio weights since CFQ
    left the kernel in 5.0; a new loop device has no scheduler)."""
    img = Path(f"/tmp/{token}.img")
    dev = ""
    try:
        with open(img, "wb") as f:
            if bfq:  # real blocks on the disk below: direct reads of them wait for it, not for a cpu
                f.write(bytes(size))
                os.fsync(f.fileno())
            else:
                f.truncate(size)
        argv = ["losetup", "--find", "--show", *(["--direct-io=on"] if bfq else []), str(img)]
        dev = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        if bfq:
            try:
                Path("/sys/block", os.path.basename(dev), "queue", "scheduler").write_text("bfq")
            except OSError:
                pytest.skip("no bfq I/O scheduler in this kernel")
        rdev = os.stat(dev).st_rdev
        yield dev, os.major(rdev), os.minor(rdev)
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        img.unlink(missing_ok=True)


def dd_writer(dev: str) -> str:
    """2 MiB of direct writes to ``dev``."""
    return (
        "import os\n"
        f"os.execvp('dd', ['dd', 'if=/dev/zero', 'of={dev}', 'bs=64k', 'count=32', 'oflag=direct', 'status=none'])\n"
    )


def io_bytes(mgr: Manager, major: int, minor: int, op: str) -> int:
    """Bytes of ``op`` (Read, Write) to the device, from the cgroup's accounting."""
    entries = mgr.stats()["blkio"]["ioServiceBytesRecursive"]
    return sum(e["value"] for e in entries if (e["major"], e["minor"], e["op"]) == (major, minor, op))


def writes_are_throttled(
    mgr: Manager, held: HeldFactory, dev: str, check: Callable[[int, int], None]
) -> None:
    """dd's 2 MiB to ``dev`` under a 4 MiB/s write limit (``check`` reads it back from the version's
    own file), then counted as written."""
    rdev = os.stat(dev).st_rdev
    major, minor = os.major(rdev), os.minor(rdev)
    h = held(dd_writer(dev))
    mgr.apply(h.pid)
    mgr.set({"blockIO": {"throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 4 << 20}]}})
    check(major, minor)
    started = time.monotonic()
    h.release()
    assert h.p.wait(timeout=60) == 0
    # 2 MiB at 4 MiB/s: reported, not asserted (no timing asserts in tests)
    print(f"dd of 2 MiB under a 4 MiB/s limit took {time.monotonic() - started:.2f}s")
    assert io_bytes(mgr, major, minor, "Write") >= 2 << 20
