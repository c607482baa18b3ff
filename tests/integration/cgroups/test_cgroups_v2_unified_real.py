"""The v2 driver for real, on the cgroup2 tree a hybrid host mounts at /sys/fs/cgroup/unified.

That tree has few controllers (hugetlb at most) but the core of v2 is all there: cgroup.procs,
cgroup.freeze, cgroup.kill, subtree delegation, and eBPF device programs, which attach to any cgroup2
directory. On a pure v2 host the same tests run against /sys/fs/cgroup itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.runtime.cgroups import open_manager
from tests.helpers import cgroup_checks as checks

ROOT = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "/sys/fs/cgroup/unified"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(f"{ROOT}/cgroup.controllers"), reason="no cgroup2 mount"),
]


@pytest.fixture
def mgr(token: str, leakcheck: None) -> Iterator[object]:
    """A v2 manager on the cgroup2 tree; the root's subtree_control is put back as it was.

    The tests of this module take a lock: one test's restore must not pull a controller from under
    another's cgroup when xdist runs them side by side.
    """
    with open("/tmp/pallet-cgroup2-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = set(Path(ROOT, "cgroup.subtree_control").read_text().split())
        m = open_manager(f"/{token}", token, root=ROOT)
        assert m.version == 2
        try:
            yield m
        finally:
            m.destroy()
            for c in set(Path(ROOT, "cgroup.subtree_control").read_text().split()) - before:
                try:
                    Path(ROOT, "cgroup.subtree_control").write_text(f"-{c}")
                except OSError:
                    pass  # still used below: leave it, as systemd would


def test_place_freeze_thaw_and_kill(mgr, held, token) -> None:
    counter = Path(f"/tmp/{token}.count")
    try:
        p = held(
            f"import time, os\np = {str(counter)!r}\ni = 0\n"
            "if os.fork() == 0: time.sleep(60)\n"
            "while True:\n    i += 1\n    open(p, 'w').write(str(i))\n    time.sleep(0.005)\n"
        )
        mgr.apply(p.pid)
        assert Path(mgr.path, "cgroup.procs").read_text().split() == [str(p.pid)]
        p.send("go")
        while not counter.exists() or not counter.read_text():
            time.sleep(0.01)
        assert len(mgr.pids()) == 2
        mgr.freeze()
        assert mgr.frozen()
        seen = counter.read_text()
        time.sleep(0.3)
        assert counter.read_text() == seen
        mgr.thaw()
        assert not mgr.frozen()
        deadline = time.monotonic() + 10
        while counter.read_text() == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counter.read_text() != seen
        mgr.freeze()
        mgr.kill_all(signal.SIGKILL)  # cgroup.kill: frozen tasks die too
        assert p.p.wait(timeout=10) == -signal.SIGKILL
        mgr.thaw()
        mgr.destroy()
        assert not mgr.exists()
        mgr.destroy()
    finally:
        counter.unlink(missing_ok=True)


def test_kill_all_with_another_signal_freezes_signals_and_thaws(mgr, held) -> None:
    p = held("import time\ntime.sleep(60)\n")
    mgr.apply(p.pid)
    p.send("go")
    mgr.kill_all(signal.SIGTERM)
    assert p.p.wait(timeout=10) == -signal.SIGTERM
    assert not mgr.frozen()


def test_device_program_denies_and_an_update_replaces_it(mgr, held) -> None:
    from pallet.linux import bpf

    p = held(checks.OPENER)
    mgr.apply(p.pid)
    p.release()

    def try_open(path: str) -> str:
        return checks.try_open(p, path)

    assert try_open("/dev/kmsg") == "ok"  # no program yet
    mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert try_open("/dev/kmsg") == str(errno.EPERM)
    assert try_open("/dev/null") == "ok"  # the defaults every container gets
    assert try_open("/dev/zero") == "ok"
    mgr.set(
        {
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"},
            ]
        }
    )
    assert try_open("/dev/kmsg") == "ok"
    fd = os.open(mgr.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(bpf.prog_query(fd)) == 1  # the old program was detached
    finally:
        os.close(fd)


def test_compiled_program_checks_mknod(mgr, token) -> None:
    """The defaults allow mknod of every device (runc's "c *:* m"), so attach a program built
    from the rules alone to see that mknod goes through it too."""
    from pallet.linux import bpf
    from pallet.runtime.cgroups.devices import device_program

    base = f"/tmp/{token}-node"
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "for line in sys.stdin:\n"
            "    minor = int(line)\n"
            "    path = f'{sys.argv[1]}-{minor}'\n"
            "    try:\n        os.mknod(path, 0o600 | 0o020000, os.makedev(1, minor)); print('ok', flush=True)\n"
            "    except OSError as e:\n        print(e.errno, flush=True)\n",
            base,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        mgr.apply(p.pid)
        rules = [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "m"},
        ]
        dfd = os.open(mgr.path, os.O_RDONLY | os.O_DIRECTORY)
        pfd = bpf.prog_load_cgroup_device(device_program(rules))
        try:
            bpf.prog_attach(dfd, pfd)
        finally:
            os.close(pfd)
            os.close(dfd)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("1\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == str(errno.EPERM)
        p.stdin.write("3\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok"
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        for minor in (1, 3):
            Path(f"{base}-{minor}").unlink(missing_ok=True)


def test_hugetlb_limit_when_the_tree_has_the_controller(mgr) -> None:
    if "hugetlb" not in Path(ROOT, "cgroup.controllers").read_text().split():
        pytest.skip("no hugetlb controller in this cgroup2 tree")
    mgr.apply(0)
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    sizes = [
        n[len("hugetlb.") : -len(".max")]
        for n in os.listdir(mgr.path)
        if n.endswith(".max") and ".rsvd" not in n
    ]
    assert sizes, "hugetlb was not delegated"
    size = min(sizes, key=lambda s: int(s[:-2]) * units[s[-2:]])
    limit = 4 * int(size[:-2]) * units[size[-2:]]  # the kernel rounds limits down to whole pages
    mgr.set({"hugepageLimits": [{"pageSize": size, "limit": limit}]})
    assert Path(mgr.path, f"hugetlb.{size}.max").read_text().strip() == str(limit)
    assert Path(mgr.path, f"hugetlb.{size}.rsvd.max").read_text().strip() == str(limit)
    assert mgr.stats()["hugetlb"][size] == {"usage": 0, "failcnt": 0}


def test_a_program_attached_without_multi_is_replaced(mgr) -> None:
    """Another manager's program attached exclusively (no BPF_F_ALLOW_MULTI) is replaced, not joined."""
    from pallet.linux import bpf
    from pallet.runtime.cgroups.devices import device_program

    mgr.apply(0)
    dfd = os.open(mgr.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        foreign = bpf.prog_load_cgroup_device(device_program([{"allow": True, "access": "rwm"}]))
        try:
            bpf.prog_attach(dfd, foreign, 0)
        finally:
            os.close(foreign)
        before = bpf.prog_query(dfd)
        assert len(before) == 1
        mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
        after = bpf.prog_query(dfd)
        assert len(after) == 1 and after != before
    finally:
        os.close(dfd)


@pytest.mark.skipif(not os.path.exists(f"{ROOT}/cpu.pressure"), reason="the kernel gives no PSI")
def test_stats_carry_pressure_stall_information(mgr, held) -> None:
    """PSI is part of v2's core (every cgroup has the pressure files, controllers or not): two busy
    loops in a cgroup on a two-cpu machine under load stall on cpu, and stats report it as runc does."""
    p = held("import time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass\n")
    q = held("import time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass\n")
    mgr.apply(p.pid)
    mgr.apply(q.pid)
    s0 = mgr.stats()
    assert set(s0["cpu"]["psi"]) >= {"some"} and set(s0["memory"]["psi"]) == {"some", "full"}
    assert set(s0["cpu"]["psi"]["some"]) == {"avg10", "avg60", "avg300", "total"}
    assert set(s0["blkio"]["psi"]) == {"some", "full"}
    p.release()
    q.release()
    assert p.p.wait(timeout=30) == 0 and q.p.wait(timeout=30) == 0
    s1 = mgr.stats()
    # total is the stall time in µs: a test cannot be sure it stalled (an idle 16-cpu box would not),
    # only that the counter is read and never goes back
    assert s1["cpu"]["psi"]["some"]["total"] >= s0["cpu"]["psi"]["some"]["total"]
    print("cpu some stall µs:", s1["cpu"]["psi"]["some"]["total"] - s0["cpu"]["psi"]["some"]["total"])
